// Package main exists so that `go mod tidy` records etcd's dependencies;
// hack/build-control-plane.sh builds go.etcd.io/etcd/server/v3 itself.
package main

import _ "go.etcd.io/etcd/server/v3/etcdmain"

func main() {}
