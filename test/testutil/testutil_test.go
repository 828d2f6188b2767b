package testutil

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestDownwardAPIFiles(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns",
		Labels: map[string]string{"app": "relay"}, Annotations: map[string]string{"turnpike.dev/node-addresses": `{"source":"STUN"}`}}}
	item := func(path, field string) corev1.DownwardAPIVolumeFile {
		return corev1.DownwardAPIVolumeFile{Path: path, FieldRef: &corev1.ObjectFieldSelector{FieldPath: field}}
	}
	tests := []struct {
		field, want string
	}{
		{"metadata.annotations['turnpike.dev/node-addresses']", `{"source":"STUN"}`},
		{"metadata.annotations['absent']", ""},
		{"metadata.labels['app']", "relay"},
		{"metadata.name", "p"},
		{"metadata.namespace", "ns"},
		{"spec.nodeName", "error"},
	}
	for _, tt := range tests {
		files, err := DownwardAPIFiles(&corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{item("f", tt.field)}}, pod)
		got := string(files["f"])
		if err != nil {
			got = "error"
		}
		if got != tt.want {
			t.Errorf("%s: %q (%v), want %q", tt.field, got, err, tt.want)
		}
	}
}
