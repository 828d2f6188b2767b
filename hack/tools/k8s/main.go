// Package main exists so that `go mod tidy` records every dependency of the
// commands built from this module; hack/build-control-plane.sh builds the
// commands themselves.
package main

import (
	_ "k8s.io/kubectl/pkg/cmd"
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {}
