package fastpath

// The BPF objects and their Go bindings are generated and committed, so that
// `go build` needs no clang. Regenerate with `make generate-bpf` after
// changing turnrelay.c (needs clang and libbpf-dev).
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -tags linux -target bpfel,bpfeb -type addr -type chan_key -type chan_val -type chan4 -type chan6 -type peer_slot -type alloc -type bucket -type stats -type hop turnrelay turnrelay.c -- -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu
