package kubelet

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

// relayPod is shaped like the operator's relay pod: the config and the
// credentials each in a mount of their own.
func relayPod(command ...string) *corev1.Pod {
	return &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{
		Command: command,
		VolumeMounts: []corev1.VolumeMount{
			{Name: "config", MountPath: "/etc/turnpike/config"},
			{Name: "credentials", MountPath: "/etc/turnpike/credentials"},
		},
	}}}}
}

func TestHostPath(t *testing.T) {
	pod := relayPod()
	for _, tt := range []struct{ path, want string }{
		{"/etc/turnpike/config/relay.yaml", "/root/etc/turnpike/config/relay.yaml"},
		{"/etc/turnpike/credentials", "/root/etc/turnpike/credentials"},
		{"/etc/turnpike/configuration", "/etc/turnpike/configuration"}, // a prefix, not the mount
		{"/etc/turnpike", "/etc/turnpike"},
		{"--log-level", "--log-level"},
	} {
		if got := HostPath(pod, "/root", tt.path); got != tt.want {
			t.Errorf("HostPath(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}

func TestRelayFiles(t *testing.T) {
	for _, tt := range []struct {
		name                        string
		command                     []string
		wantConfig, wantCredentials string
		wantErr                     bool
	}{
		{"both", []string{"/turnpike", "relay", "--config", "/etc/turnpike/config/relay.yaml", "--credentials", "/etc/turnpike/credentials"},
			"/root/etc/turnpike/config/relay.yaml", "/root/etc/turnpike/credentials", false},
		{"no credentials", []string{"/turnpike", "relay", "--config", "/etc/turnpike/config/relay.yaml"},
			"/root/etc/turnpike/config/relay.yaml", "", false},
		{"no config", []string{"/turnpike", "relay", "--credentials", "/etc/turnpike/credentials"}, "", "", true},
		{"flag without value", []string{"/turnpike", "relay", "--config"}, "", "", true},
	} {
		config, creds, err := RelayFiles(relayPod(tt.command...), "/root")
		if config != tt.wantConfig || creds != tt.wantCredentials || (err != nil) != tt.wantErr {
			t.Errorf("%s: RelayFiles = %q, %q, %v; want %q, %q, error %v", tt.name, config, creds, err, tt.wantConfig, tt.wantCredentials, tt.wantErr)
		}
	}
}
