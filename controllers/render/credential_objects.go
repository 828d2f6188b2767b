package render

import (
	"crypto/md5" //nolint:gosec // TURN long-term keys are MD5 by RFC 5389
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/relay/config"
)

// Keys of a TurnCredential's output Secret, the one apps read.
const (
	SecretKeyUsername     = "username"
	SecretKeyPassword     = "password"
	SecretKeySharedSecret = "sharedSecret"
	SecretKeyICEServers   = "iceServers.json"
)

// ComponentCredentialState marks state Secrets, so the TurnServer controller
// can find the credentials of its relays by label.
const ComponentCredentialState = "credential-state"

// OutputSecretName is the Secret apps read.
func OutputSecretName(tc *turnpikev1.TurnCredential) string {
	if tc.Spec.SecretName != "" {
		return tc.Spec.SecretName
	}
	return tc.Name
}

// StateSecretName is the Secret holding a credential's state, including the
// previous and staged secrets apps never see.
func StateSecretName(tc *turnpikev1.TurnCredential) string { return "turnpike-state-" + tc.Name }

func credentialLabels(tc *turnpikev1.TurnCredential, component string) map[string]string {
	return map[string]string{
		"app.kubernetes.io/name":       "turnpike",
		"app.kubernetes.io/instance":   tc.Spec.TurnServerRef.Name,
		"app.kubernetes.io/component":  component,
		"app.kubernetes.io/managed-by": "turnpike-operator",
		"app.kubernetes.io/part-of":    "turnpike",
		turnpikev1.LabelTurnServer:     tc.Spec.TurnServerRef.Name,
		turnpikev1.LabelTurnCredential: tc.Name,
	}
}

func desiredStateSecret(tc *turnpikev1.TurnCredential, st CredentialState) *corev1ac.SecretApplyConfiguration {
	return corev1ac.Secret(StateSecretName(tc), tc.Namespace).
		WithLabels(credentialLabels(tc, ComponentCredentialState)).
		WithOwnerReferences(ownerReference(tc, "TurnCredential")).
		WithType(corev1.SecretTypeOpaque).
		WithData(st.encode())
}

// ICEServer is one entry of an RTCConfiguration's iceServers.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// desiredOutputSecret is what apps read: the current credential and
// iceServers.json, ready to hand to an RTCPeerConnection. For a shared
// secret, iceServers.json has the URLs only: the app server mints a
// username and password per client.
func desiredOutputSecret(tc *turnpikev1.TurnCredential, st CredentialState, urls []string) (*corev1ac.SecretApplyConfiguration, error) {
	ice := ICEServer{URLs: append([]string{}, urls...)}
	data := map[string][]byte{}
	switch tc.Spec.Type {
	case turnpikev1.CredentialStatic:
		data[SecretKeyUsername] = []byte(tc.Spec.Username)
		data[SecretKeyPassword] = []byte(st.Current)
		ice.Username, ice.Credential = tc.Spec.Username, st.Current
	case turnpikev1.CredentialSharedSecret:
		data[SecretKeySharedSecret] = []byte(st.Current)
	}
	j, err := json.Marshal([]ICEServer{ice})
	if err != nil {
		return nil, err
	}
	data[SecretKeyICEServers] = j
	return corev1ac.Secret(OutputSecretName(tc), tc.Namespace).
		WithLabels(credentialLabels(tc, "credential")).
		WithOwnerReferences(ownerReference(tc, "TurnCredential")).
		WithType(corev1.SecretTypeOpaque).
		WithData(data), nil
}

// CredentialEntry is one TurnCredential and its state, for the relay bundle.
type CredentialEntry struct {
	TC    *turnpikev1.TurnCredential
	State CredentialState
}

// credentialBundle folds a TurnServer's credentials into the relays'
// credentials.yaml: static users as long-term keys, shared secrets as they
// are, each with the window in which relays accept it. A staged secret is
// accepted at once (nobody has it yet); a previous one until its overlap
// ends, which the relay enforces itself to the second.
func credentialBundle(realm string, entries []CredentialEntry) *config.Credentials {
	sort.Slice(entries, func(i, j int) bool { return entries[i].TC.Name < entries[j].TC.Name })
	bundle := &config.Credentials{Version: config.Version}
	for _, e := range entries {
		versions := []struct {
			value    string
			revision int64
			notAfter time.Time
		}{
			{e.State.Current, e.State.Revision, time.Time{}},
			{e.State.Previous, e.State.Revision - 1, e.State.PreviousNotAfter},
			{e.State.Next, e.State.Revision + 1, time.Time{}},
		}
		for _, v := range versions {
			if v.value == "" {
				continue
			}
			var notAfter *time.Time
			if !v.notAfter.IsZero() {
				t := v.notAfter.UTC()
				notAfter = &t
			}
			switch e.TC.Spec.Type {
			case turnpikev1.CredentialStatic:
				bundle.Users = append(bundle.Users, config.User{
					Username: e.TC.Spec.Username, Key: LongTermKey(e.TC.Spec.Username, realm, v.value), NotAfter: notAfter,
				})
			case turnpikev1.CredentialSharedSecret:
				bundle.SharedSecrets = append(bundle.SharedSecrets, config.SharedSecret{
					Name: fmt.Sprintf("%s#%d", e.TC.Name, v.revision), Secret: v.value, NotAfter: notAfter,
				})
			}
		}
	}
	return bundle
}

// LongTermKey is MD5(username:realm:password) in hex (RFC 5389 section 15.4).
func LongTermKey(username, realm, password string) string {
	sum := md5.Sum([]byte(strings.Join([]string{username, realm, password}, ":"))) //nolint:gosec
	return hex.EncodeToString(sum[:])
}
