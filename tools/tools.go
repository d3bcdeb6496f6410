//go:build tools

// Package tools pins the Go programs the test harness runs: kube-apiserver and etcd.
// Nothing imports this package; it exists so that go.mod records their versions.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
