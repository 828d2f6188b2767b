package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CredentialType is how a credential authenticates.
// +kubebuilder:validation:Enum=Static;SharedSecret
type CredentialType string

const (
	// CredentialStatic is a fixed username and a generated password.
	CredentialStatic CredentialType = "Static"
	// CredentialSharedSecret is a TURN REST API secret that mints
	// short-lived username/password pairs.
	CredentialSharedSecret CredentialType = "SharedSecret"
)

// TurnCredentialSpec says who may relay through a TurnServer.
// +kubebuilder:validation:XValidation:rule="self.type != 'Static' || has(self.username)",message="a Static credential needs username"
// +kubebuilder:validation:XValidation:rule="self.type == 'Static' || !has(self.username)",message="username is only for Static credentials; SharedSecret usernames are minted per client"
// +kubebuilder:validation:XValidation:rule="self.type == 'SharedSecret' || !has(self.ttl)",message="ttl is only for SharedSecret credentials"
type TurnCredentialSpec struct {
	// TurnServerRef names the TurnServer, in this namespace, these credentials are for.
	TurnServerRef LocalObjectReference `json:"turnServerRef"`
	// Type is Static (username + generated password) or SharedSecret (TURN REST API).
	Type CredentialType `json:"type"`
	// Username of a Static credential.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[^:]+$`
	// +optional
	Username string `json:"username,omitempty"`
	// Rotation replaces the password or secret on a schedule.
	// +optional
	Rotation *Rotation `json:"rotation,omitempty"`
	// SecretName is the Secret apps read (iceServers.json and the
	// credential); defaults to the TurnCredential's name.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	SecretName string `json:"secretName,omitempty"`
	// TTL is how long credentials minted from a shared secret stay valid.
	// +optional
	TTL *metav1.Duration `json:"ttl,omitempty"`
}

// Rotation replaces a secret every Interval; the previous one stays valid for
// Overlap so clients holding it are not locked out.
// +kubebuilder:validation:XValidation:rule="duration(self.overlap) >= duration('2m')",message="rotation.overlap must be at least 2m: kubelets can take that long to deliver a new Secret to relays"
// +kubebuilder:validation:XValidation:rule="duration(self.overlap) < duration(self.interval)",message="rotation.overlap must be shorter than rotation.interval"
type Rotation struct {
	// Interval between rotations, e.g. "24h".
	Interval metav1.Duration `json:"interval"`
	// Overlap during which the previous secret is still accepted, e.g. "1h".
	Overlap metav1.Duration `json:"overlap"`
}

// TurnCredentialStatus is what the operator observed.
type TurnCredentialStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// CurrentRevision counts rotations.
	// +optional
	CurrentRevision int64 `json:"currentRevision,omitempty"`
	// +optional
	LastRotationTime *metav1.Time `json:"lastRotationTime,omitempty"`
	// +optional
	NextRotationTime *metav1.Time `json:"nextRotationTime,omitempty"`
	// SecretName is the Secret holding this credential for apps.
	// +optional
	SecretName string `json:"secretName,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=tc,categories=turnpike
// +kubebuilder:printcolumn:name="Server",type=string,JSONPath=`.spec.turnServerRef.name`
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.type`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Secret",type=string,JSONPath=`.status.secretName`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// TurnCredential is a credential for a TurnServer, delivered to apps in a Secret.
type TurnCredential struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   TurnCredentialSpec   `json:"spec"`
	Status TurnCredentialStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// TurnCredentialList is a list of TurnCredentials.
type TurnCredentialList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TurnCredential `json:"items"`
}

func init() {
	SchemeBuilder.Register(&TurnCredential{}, &TurnCredentialList{})
}
