package main

import (
	"context"
	"fmt"
	"os"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/ext"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// fluxCheck is one entry of a Flux Kustomization's spec.healthCheckExprs.
type fluxCheck struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	InProgress string `json:"inProgress"`
	Failed     string `json:"failed"`
	Current    string `json:"current"`
}

type fluxKustomization struct {
	Spec struct {
		HealthCheckExprs []fluxCheck `json:"healthCheckExprs"`
	} `json:"spec"`
}

type fluxVerdict struct {
	Status string `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
}

func readFluxChecks(path string) ([]fluxCheck, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var kustomization fluxKustomization
	if err := yaml.Unmarshal(data, &kustomization); err != nil {
		return nil, err
	}
	return kustomization.Spec.HealthCheckExprs, nil
}

// fluxProgram parses an expression in the environment Flux's kustomize-controller uses for
// healthCheckExprs (fluxcd/pkg runtime/cel): parsed, not compiled, the object's top-level
// fields as variables.
func fluxProgram(expression string) (cel.Program, error) {
	env, err := cel.NewEnv(
		cel.HomogeneousAggregateLiterals(),
		cel.EagerlyValidateDeclarations(true),
		cel.DefaultUTCTimeZone(true),
		cel.CrossTypeNumericComparisons(true),
		cel.OptionalTypes(),
		ext.Strings(),
		ext.Sets(),
		ext.Encoders(),
	)
	if err != nil {
		return nil, err
	}
	parsed, issues := env.Parse(expression)
	if issues != nil && issues.Err() != nil {
		return nil, issues.Err()
	}
	return env.Program(parsed, cel.EvalOptions(cel.OptOptimize), cel.InterruptCheckFrequency(100))
}

// fluxStatus judges an object as Flux does with healthCheckExprs: a status.observedGeneration
// behind metadata.generation is InProgress; then inProgress, failed, current are evaluated in
// that order and the first true one wins; none true is InProgress; an evaluation error is an
// error (Flux keeps waiting until the Kustomization's timeout).
func fluxStatus(checks []fluxCheck, obj *unstructured.Unstructured) *fluxVerdict {
	for _, check := range checks {
		if check.APIVersion != obj.GetAPIVersion() || check.Kind != obj.GetKind() {
			continue
		}
		content := obj.UnstructuredContent()
		observed, found, err := unstructured.NestedInt64(content, "status", "observedGeneration")
		if err != nil {
			return &fluxVerdict{Error: err.Error()}
		}
		if found && observed != obj.GetGeneration() {
			return &fluxVerdict{Status: "InProgress"}
		}
		for _, step := range []struct{ expression, status string }{
			{check.InProgress, "InProgress"},
			{check.Failed, "Failed"},
			{check.Current, "Current"},
		} {
			if step.expression == "" {
				continue
			}
			program, err := fluxProgram(step.expression)
			if err != nil {
				return &fluxVerdict{Error: fmt.Sprintf("%s: %v", step.status, err)}
			}
			value, _, err := program.ContextEval(context.Background(), content)
			if err != nil {
				return &fluxVerdict{Error: fmt.Sprintf("%s: %v", step.status, err)}
			}
			result, ok := value.(types.Bool)
			if !ok {
				return &fluxVerdict{Error: fmt.Sprintf("%s: not a boolean", step.status)}
			}
			if result {
				return &fluxVerdict{Status: step.status}
			}
		}
		return &fluxVerdict{Status: "InProgress"}
	}
	return nil
}
