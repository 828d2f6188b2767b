package v1alpha1

// Condition types shared by TurnServer and TurnCredential.
const (
	// ConditionReady is True when the object does its job: relays serve on
	// every selected node, or a credential is usable.
	ConditionReady = "Ready"
	// ConditionProgressing is True while a change is being rolled out.
	ConditionProgressing = "Progressing"
	// ConditionDegraded is True when something works but not as asked
	// (an address that is not public, a missing TLS secret, a port conflict).
	ConditionDegraded = "Degraded"
)

// Well-known labels and annotations.
const (
	// LabelTurnServer names the TurnServer a generated object belongs to.
	LabelTurnServer = "turnpike.dev/turnserver"
	// LabelTurnCredential names the TurnCredential a generated Secret belongs to.
	LabelTurnCredential = "turnpike.dev/turncredential"
	// AnnotationExternalIP on a Node fixes its public address(es), comma-separated.
	AnnotationExternalIP = "turnpike.dev/external-ip"
	// AnnotationSocketHash on the relay pod template changes only when the
	// relay needs new sockets, so only those changes roll the pods.
	AnnotationSocketHash = "turnpike.dev/socket-hash"
	// AnnotationRotate set to a new value rotates a TurnCredential once.
	AnnotationRotate = "turnpike.dev/rotate"
	// AnnotationNodeAddresses on a relay pod is its node's published
	// addresses, which the operator writes and the relay reads through a
	// downward-API file (relay.yaml's addresses.nodeFile).
	AnnotationNodeAddresses = "turnpike.dev/node-addresses"
)

// LocalObjectReference names an object in the same namespace.
type LocalObjectReference struct {
	// Name of the object.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}
