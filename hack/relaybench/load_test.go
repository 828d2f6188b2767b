package main

import (
	"slices"
	"testing"
)

// The clients send in turn, burst datagrams each, however the datagrams
// are split among system calls.
func TestRoundRobin(t *testing.T) {
	for _, tc := range []struct {
		clients, burst int
		calls          []int // datagrams per call
		want           []int // the client of each datagram, all calls in order
	}{
		{3, 2, []int{5, 3}, []int{0, 0, 1, 1, 2, 2, 0, 0}},
		{2, 1, []int{3}, []int{0, 1, 0}},
		{2, 3, []int{1, 1, 2, 4}, []int{0, 0, 0, 1, 1, 1, 0, 0}},
		{1, 4, []int{6}, []int{0, 0, 0, 0, 0, 0}},
	} {
		r := roundRobin{clients: tc.clients, burst: tc.burst}
		var got, senders []int
		for _, k := range tc.calls {
			senders = r.take(k, senders)
			got = append(got, senders...)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%d clients, bursts of %d, calls of %v: clients %v, want %v", tc.clients, tc.burst, tc.calls, got, tc.want)
		}
	}
}

// Through each client's own socket a call carries one client's datagrams
// only: at most what is left of its burst.
func TestRoundRobinLeftInBurst(t *testing.T) {
	r := roundRobin{clients: 2, burst: 3}
	var got [][]int
	for range 4 {
		k := min(2, r.leftInBurst())
		got = append(got, r.take(k, nil))
	}
	want := [][]int{{0, 0}, {0}, {1, 1}, {1}}
	if !slices.EqualFunc(got, want, slices.Equal[[]int]) {
		t.Errorf("calls of up to 2: %v, want %v", got, want)
	}
}
