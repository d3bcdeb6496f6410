// Command idmsync-health judges Kubernetes objects the way two GitOps tools do:
//
//   - Argo CD: a resource-customization health script (health.lua) run in gopher-lua, the Lua
//     runtime Argo CD embeds, set up as Argo CD sets it up: the object as the global `obj`, the
//     script's returned table encoded with layeh.com/gopher-json and read as {status, message},
//     any status outside Argo CD's six becoming Unknown. Two library sets are evaluated:
//     "argocd" is a script from the argocd-cm ConfigMap (only package, base, table and a safe
//     os), "argocdBuiltin" a script shipped inside Argo CD (all standard libraries too).
//   - Flux / kpt / cli-utils: sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute, and, with
//     -flux, the healthCheckExprs of a Flux Kustomization evaluated with cel-go as Flux does.
//
// Usage: idmsync-health [-script health.lua] [-flux kustomization.yaml] FILE...
// (FILE: YAML or JSON, one or more documents, or a List; "-" reads stdin). Prints one JSON
// array, one element per object.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	luajson "layeh.com/gopher-json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// Argo CD stops a health script after one second.
const scriptTimeout = time.Second

// The health statuses Argo CD accepts from a script; anything else is reported as Unknown.
var argoStatuses = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true,
	"Suspended": true, "Missing": true, "Unknown": true,
}

type health struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

type judgement struct {
	Source        string       `json:"source"`
	Namespace     string       `json:"namespace,omitempty"`
	Name          string       `json:"name"`
	ArgoCD        *health      `json:"argocd,omitempty"`
	ArgoCDBuiltin *health      `json:"argocdBuiltin,omitempty"`
	ArgoCDError   string       `json:"argocdError,omitempty"`
	KStatus       health       `json:"kstatus"`
	KStatusError  string       `json:"kstatusError,omitempty"`
	Flux          *fluxVerdict `json:"flux,omitempty"`
}

func main() {
	scriptPath := flag.String("script", "", "Argo CD health.lua to run (omit for kstatus only)")
	fluxPath := flag.String("flux", "", "Flux Kustomization whose healthCheckExprs to evaluate")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: idmsync-health [-script health.lua] [-flux kustomization.yaml] FILE...")
		os.Exit(2)
	}
	var checks []fluxCheck
	if *fluxPath != "" {
		var err error
		if checks, err = readFluxChecks(*fluxPath); err != nil {
			fail(fmt.Errorf("%s: %w", *fluxPath, err))
		}
	}
	script := ""
	if *scriptPath != "" {
		data, err := os.ReadFile(*scriptPath)
		if err != nil {
			fail(err)
		}
		script = string(data)
	}
	results := []judgement{}
	for _, path := range flag.Args() {
		objects, err := readObjects(path)
		if err != nil {
			fail(fmt.Errorf("%s: %w", path, err))
		}
		for _, obj := range objects {
			judged := judge(path, obj, script)
			judged.Flux = fluxStatus(checks, obj)
			results = append(results, judged)
		}
	}
	out := json.NewEncoder(os.Stdout)
	out.SetIndent("", "  ")
	if err := out.Encode(results); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "idmsync-health:", err)
	os.Exit(1)
}

func judge(source string, obj *unstructured.Unstructured, script string) judgement {
	result := judgement{Source: source, Namespace: obj.GetNamespace(), Name: obj.GetName()}
	if script != "" {
		configMap, err := argoHealth(obj, script, false)
		if err != nil {
			result.ArgoCDError = err.Error()
		} else {
			builtin, err := argoHealth(obj, script, true)
			if err != nil {
				result.ArgoCDError = "with the standard libraries: " + err.Error()
			}
			result.ArgoCD, result.ArgoCDBuiltin = configMap, builtin
		}
	}
	computed, err := status.Compute(obj)
	if err != nil {
		result.KStatusError = err.Error()
	} else {
		result.KStatus = health{Status: string(computed.Status), Message: computed.Message}
	}
	return result
}

// argoHealth runs a health script as Argo CD's controller does (util/lua in argo-cd).
func argoHealth(obj *unstructured.Unstructured, script string, openLibs bool) (*health, error) {
	state := lua.NewState(lua.Options{SkipOpenLibs: !openLibs})
	defer state.Close()
	// the same libraries, in the same order, as Argo CD opens them
	for _, library := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs},
	} {
		call := lua.P{Fn: state.NewFunction(library.open), NRet: 0, Protect: true}
		if err := state.CallByParam(call, lua.LString(library.name)); err != nil {
			return nil, err
		}
	}
	state.PreloadModule(lua.OsLibName, loadSafeOs)
	ctx, cancel := context.WithTimeout(context.Background(), scriptTimeout)
	defer cancel()
	state.SetContext(ctx)
	state.SetGlobal("obj", toLua(state, obj.Object))
	if err := state.DoString(script); err != nil {
		return nil, err
	}
	returned := state.Get(-1)
	if returned.Type() != lua.LTTable {
		return nil, fmt.Errorf("expect table output from Lua script, not %s", returned.Type())
	}
	encoded, err := luajson.Encode(returned)
	if err != nil {
		return nil, err
	}
	var judged health
	if err := json.Unmarshal(encoded, &judged); err != nil {
		return nil, err
	}
	if !argoStatuses[judged.Status] {
		return &health{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return &judged, nil
}

// Argo CD exposes only os.time and os.date to scripts; ours needs neither, so both are
// stand-ins that keep `os` present (a script calling them still runs) without the real os.
var safeOs = map[string]lua.LGFunction{
	"time": func(state *lua.LState) int {
		state.Push(lua.LNumber(time.Now().Unix()))
		return 1
	},
	"date": func(state *lua.LState) int {
		state.Push(lua.LString(time.Now().UTC().Format(time.RFC3339)))
		return 1
	},
}

func openSafeOs(state *lua.LState) int {
	state.Push(state.RegisterModule(lua.OsLibName, safeOs))
	return 1
}

func loadSafeOs(state *lua.LState) int {
	state.Push(state.SetFuncs(state.NewTable(), safeOs))
	return 1
}

// toLua converts an unstructured value as Argo CD's decodeValue does: maps become tables with
// string keys, lists become 1-based arrays, every number a Lua number, null becomes nil.
func toLua(state *lua.LState, value any) lua.LValue {
	switch converted := value.(type) {
	case bool:
		return lua.LBool(converted)
	case float64:
		return lua.LNumber(converted)
	case int64:
		return lua.LNumber(converted)
	case int:
		return lua.LNumber(converted)
	case int32:
		return lua.LNumber(converted)
	case json.Number:
		return lua.LString(converted)
	case string:
		return lua.LString(converted)
	case []any:
		array := state.CreateTable(len(converted), 0)
		for _, item := range converted {
			array.Append(toLua(state, item))
		}
		return array
	case map[string]any:
		table := state.CreateTable(0, len(converted))
		for key, item := range converted {
			table.RawSetH(lua.LString(key), toLua(state, item))
		}
		return table
	}
	return lua.LNil
}

// readObjects decodes every object in a YAML or JSON file (or stdin), unwrapping Lists, with
// numbers as int64 the way the API machinery reads them (kstatus needs that for generations).
func readObjects(path string) ([]*unstructured.Unstructured, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	decoder := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objects []*unstructured.Unstructured
	for {
		var raw json.RawMessage
		if err := decoder.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, err
		}
		if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
			continue
		}
		decoded, _, err := unstructured.UnstructuredJSONScheme.Decode(raw, nil, nil)
		if err != nil {
			return nil, err
		}
		switch typed := decoded.(type) {
		case *unstructured.Unstructured:
			objects = append(objects, typed)
		case *unstructured.UnstructuredList:
			for i := range typed.Items {
				objects = append(objects, &typed.Items[i])
			}
		default:
			return nil, fmt.Errorf("unexpected object %T", decoded)
		}
	}
	return objects, nil
}
