package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/test/testenv"
	"github.com/turnpike-dev/turnpike/test/testutil"
)

// The sample objects, as config/samples names them.
const (
	namespace        = "default"
	sampleServer     = "example"
	sampleStatic     = "example-static"
	sampleTLSSecret  = "turn-example-com-tls"
	sampleTLSDNSName = "turn.example.com"
)

// cluster is the playground's view of the API server and this machine.
type cluster struct {
	client   client.Client
	hostIP   netip.Addr
	nodeName string
}

// registerNode creates a Ready Node for this machine, labelled so that the
// sample TurnServer's placement selects it, with this machine's address as
// InternalIP (the relay's HOST_IP).
func (c *cluster) registerNode(ctx context.Context) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: c.nodeName,
		Labels: map[string]string{
			"kubernetes.io/hostname": c.nodeName,
			"kubernetes.io/os":       "linux",
			"turnpike.dev/relay":     "true",
		},
	}}
	return testenv.CreateReadyNode(ctx, c.client, node, []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: c.hostIP.String()},
		{Type: corev1.NodeHostName, Address: c.nodeName},
	})
}

// applySamples creates the TLS Secret the sample TurnServer needs and every
// object of config/samples, unchanged: the probe's echo peer is a second
// allocation on the same relay, which the default peer policy admits.
func (c *cluster) applySamples(ctx context.Context) error {
	tls, err := c.selfSignedTLSSecret()
	if err != nil {
		return err
	}
	if err := c.client.Create(ctx, tls); err != nil {
		return fmt.Errorf("creating the TLS Secret: %w", err)
	}
	samples, err := readSamples()
	if err != nil {
		return err
	}
	for _, obj := range samples {
		obj.SetNamespace(namespace)
		if err := c.client.Create(ctx, obj); err != nil {
			return fmt.Errorf("creating sample %s %s: %w", obj.GetKind(), obj.GetName(), err)
		}
		say("applied sample %s %s", obj.GetKind(), obj.GetName())
	}
	return nil
}

// readSamples decodes the files config/samples/kustomization.yaml lists.
func readSamples() ([]*unstructured.Unstructured, error) {
	dir := filepath.Join(testenv.RepoRoot(), "config", "samples")
	var kustomization struct {
		Resources []string `json:"resources"`
	}
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err == nil {
		err = yaml.Unmarshal(data, &kustomization)
	}
	if err != nil {
		return nil, err
	}
	var out []*unstructured.Unstructured
	for _, file := range kustomization.Resources {
		data, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			return nil, err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			obj := &unstructured.Unstructured{}
			err := dec.Decode(&obj.Object)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", file, err)
			}
			if len(obj.Object) > 0 {
				out = append(out, obj)
			}
		}
	}
	return out, nil
}

// selfSignedTLSSecret is the sample's kubernetes.io/tls Secret, with a
// certificate for the sample's realm and this machine's address, valid for
// a day. Clients must skip verification (turnpike probe --insecure).
func (c *cluster) selfSignedTLSSecret() (*corev1.Secret, error) {
	certPEM, keyPEM, err := testutil.SelfSignedCert(sampleTLSDNSName, net.IP(c.hostIP.AsSlice()))
	if err != nil {
		return nil, err
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: sampleTLSSecret, Namespace: namespace},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM},
	}, nil
}

// turnServer reads the sample TurnServer.
func (c *cluster) turnServer(ctx context.Context) (*turnpikev1.TurnServer, error) {
	ts := &turnpikev1.TurnServer{}
	return ts, c.client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: sampleServer}, ts)
}

// poll calls check every interval until it returns true, an error, or the
// timeout passes.
func poll(parent context.Context, timeout time.Duration, what string, check func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	for {
		done, err := check()
		if done || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			if parent.Err() != nil {
				return parent.Err() // Ctrl-C: not a failure
			}
			return fmt.Errorf("%w waiting for %s", errTimeout, what)
		case <-time.After(500 * time.Millisecond):
		}
	}
}
