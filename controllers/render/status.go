package render

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/relay/config"
)

// Condition reasons of a TurnServer.
const (
	ReasonAllNodesReady    = "AllNodesReady"
	ReasonNodesNotReady    = "NodesNotReady"
	ReasonNoNodes          = "NoMatchingNodes"
	ReasonPortConflict     = "PortConflict"
	ReasonRollingOut       = "RollingOut"
	ReasonRolledOut        = "RolledOut"
	ReasonPending          = "Pending"
	ReasonAsExpected       = "AsExpected"
	ReasonAddressNotPublic = "AddressNotPublic"
	ReasonTLSSecretMissing = "TLSSecretMissing"
	ReasonApplyFailed      = "ApplyFailed"
	ReasonObserveFailed    = "ObserveFailed"
)

// Observation is what the reconciler saw of the cluster for one TurnServer.
type Observation struct {
	Nodes          []*corev1.Node           // selected nodes, sorted by name
	Addresses      map[string]NodeAddresses // by node name
	Pods           []*corev1.Pod            // this TurnServer's relay pods
	ReadyPods      map[string]bool          // node name -> its relay pod is ready
	DaemonSet      *appsv1.DaemonSet        // nil until created
	Conflict       *portConflict            // set when an older TurnServer holds our ports
	MissingTLSKeys []string                 // problems with referenced TLS Secrets
	// liveRelayConfig is the relay.yaml in the ConfigMap now, nil when
	// there is none or it does not parse.
	LiveRelayConfig *config.Relay
	// credentials are this TurnServer's TurnCredentials with their state.
	Credentials []CredentialEntry
	// liveBundle is the credentials.yaml in the Secret now, nil when there
	// is none or it does not parse.
	LiveBundle *config.Credentials
	// FastPath is what the ready relays' /status said of their fast path
	// when last read, by node; a relay not read yet, or that reported no
	// fast path, has no entry.
	FastPath map[string]FastPathReport
}

// ComputeStatus derives a TurnServer's status from what was observed and
// applyErr, why writing the generated objects failed, if it did. It starts
// from the current status so conditions keep their transition times.
func ComputeStatus(ts *turnpikev1.TurnServer, obs *Observation, applyErr error) turnpikev1.TurnServerStatus {
	st := turnpikev1.TurnServerStatus{
		ObservedGeneration: ts.Generation,
		Conditions:         append([]metav1.Condition(nil), ts.Status.Conditions...),
	}
	set := func(t string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: ts.Generation,
		})
	}

	var notPublic []string
	st.NodesNeedingAttention, st.AttentionNodes, notPublic = nodesNeedingAttention(obs)
	published := publishedAddresses(ts, obs, false)
	if ts.Spec.Hostname != "" {
		if slices.ContainsFunc(RelayNodes(obs, false), func(n RelayNode) bool { return n.serving }) {
			st.URLs = turnURLs(ts, []string{ts.Spec.Hostname})
		}
	} else {
		st.URLs = turnURLs(ts, urlHosts(published))
	}
	sort.Strings(st.URLs)
	var summary []string
	for _, a := range published {
		summary = append(summary, a.String())
	}
	st.AddressSummary = strings.Join(summary, ",")

	if ds := obs.DaemonSet; ds != nil {
		st.DesiredNodes = ds.Status.DesiredNumberScheduled
		st.ReadyNodes = ds.Status.NumberReady
	}
	st.NodeSummary = fmt.Sprintf("%d/%d", st.ReadyNodes, st.DesiredNodes)

	switch {
	case obs.Conflict != nil:
		msg := obs.Conflict.message()
		set(turnpikev1.ConditionReady, metav1.ConditionFalse, ReasonPortConflict, msg)
		set(turnpikev1.ConditionProgressing, metav1.ConditionFalse, ReasonPortConflict, "not rolled out: "+msg)
	case obs.DaemonSet == nil:
		set(turnpikev1.ConditionReady, metav1.ConditionFalse, ReasonPending, "relay DaemonSet not created yet")
		set(turnpikev1.ConditionProgressing, metav1.ConditionTrue, ReasonPending, "relay DaemonSet not created yet")
	default:
		setRolloutConditions(set, obs.DaemonSet)
	}
	if applyErr != nil {
		// Whatever the DaemonSet says, what should run is not written.
		set(turnpikev1.ConditionReady, metav1.ConditionFalse, ReasonApplyFailed, applyErr.Error()+"; retrying")
	}

	var degraded []string
	reason := ReasonAsExpected
	if applyErr != nil {
		degraded, reason = append(degraded, applyErr.Error()+"; retrying"), ReasonApplyFailed
	}
	if obs.Conflict != nil {
		degraded = append(degraded, obs.Conflict.message())
		if reason == ReasonAsExpected {
			reason = ReasonPortConflict
		}
	}
	if len(obs.MissingTLSKeys) > 0 {
		degraded = append(degraded, strings.Join(obs.MissingTLSKeys, "; "))
		if reason == ReasonAsExpected {
			reason = ReasonTLSSecretMissing
		}
	}
	if len(notPublic) > 0 {
		degraded = append(degraded, fmt.Sprintf("no public address known for %s: publishing their InternalIP; set the %s annotation or spec.externalAddresses, or turn on spec.stun",
			nodeList(notPublic), turnpikev1.AnnotationExternalIP))
		if reason == ReasonAsExpected {
			reason = ReasonAddressNotPublic
		}
	}
	if len(degraded) > 0 {
		set(turnpikev1.ConditionDegraded, metav1.ConditionTrue, reason, strings.Join(degraded, "; "))
	} else {
		set(turnpikev1.ConditionDegraded, metav1.ConditionFalse, ReasonAsExpected, "")
	}

	var fastPath *metav1.Condition
	if st.FastPath, fastPath = FastPathStatus(ts, obs); fastPath != nil {
		meta.SetStatusCondition(&st.Conditions, *fastPath)
	} else {
		meta.RemoveStatusCondition(&st.Conditions, turnpikev1.ConditionFastPath)
	}
	return st
}

// ObserveFailedStatus is the status of a pass that could not read what the
// status depends on: the last status, with Degraded saying why.
func ObserveFailedStatus(ts *turnpikev1.TurnServer, err error) turnpikev1.TurnServerStatus {
	st := *ts.Status.DeepCopy()
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type: turnpikev1.ConditionDegraded, Status: metav1.ConditionTrue, Reason: ReasonObserveFailed,
		Message: err.Error() + "; retrying", ObservedGeneration: ts.Generation,
	})
	return st
}

// setRolloutConditions sets Ready and Progressing from the DaemonSet's status.
func setRolloutConditions(set func(t string, s metav1.ConditionStatus, reason, msg string), ds *appsv1.DaemonSet) {
	s := ds.Status
	desired, ready, updated := s.DesiredNumberScheduled, s.NumberReady, s.UpdatedNumberScheduled
	observed := s.ObservedGeneration >= ds.Generation
	switch {
	case !observed:
		set(turnpikev1.ConditionProgressing, metav1.ConditionTrue, ReasonRollingOut, "waiting for the DaemonSet controller to see the new relay spec")
	case updated < desired:
		set(turnpikev1.ConditionProgressing, metav1.ConditionTrue, ReasonRollingOut, fmt.Sprintf("%d of %d relay nodes updated", updated, desired))
	default:
		set(turnpikev1.ConditionProgressing, metav1.ConditionFalse, ReasonRolledOut, fmt.Sprintf("all %d relay nodes run the current spec", desired))
	}
	switch {
	case observed && desired == 0:
		set(turnpikev1.ConditionReady, metav1.ConditionFalse, ReasonNoNodes, "no node matches spec.placement")
	case observed && ready == desired:
		set(turnpikev1.ConditionReady, metav1.ConditionTrue, ReasonAllNodesReady, fmt.Sprintf("relays ready on %d/%d nodes", ready, desired))
	default:
		set(turnpikev1.ConditionReady, metav1.ConditionFalse, ReasonNodesNotReady, fmt.Sprintf("relays ready on %d/%d nodes", ready, desired))
	}
}

// maxNamedInMessage is how many nodes a condition message names; the rest
// are counted.
const maxNamedInMessage = 5

// nodesNeedingAttention counts the selected nodes whose relay is not ready
// or that fell back to their InternalIP, and lists the first
// MaxAttentionNodes of them by name. notPublic is the names of those without
// a public address (at most maxNamedInMessage+1, enough for a message).
// Nodes relying on STUN are not flagged: discovery is what the user asked for.
func nodesNeedingAttention(obs *Observation) (count int32, listed []turnpikev1.AttentionNode, notPublic []string) {
	for _, n := range obs.Nodes { // sorted by name
		a := obs.Addresses[n.Name]
		var problems []turnpikev1.NodeProblem
		if !obs.ReadyPods[n.Name] {
			problems = append(problems, turnpikev1.NodeRelayNotReady)
		}
		if a.Source == turnpikev1.AddressFromInternalIP {
			problems = append(problems, turnpikev1.NodeAddressNotPublic)
			if len(notPublic) <= maxNamedInMessage {
				notPublic = append(notPublic, n.Name)
			}
		}
		if len(problems) == 0 {
			continue
		}
		count++
		if len(listed) < turnpikev1.MaxAttentionNodes {
			an := turnpikev1.AttentionNode{Name: n.Name, Problems: problems, Source: a.Source}
			for _, ip := range a.Addresses {
				an.Addresses = append(an.Addresses, ip.String())
			}
			listed = append(listed, an)
		}
	}
	return count, listed, notPublic
}

// nodeList names nodes for a message: "node(s) a, b" or, past
// maxNamedInMessage, "node(s) a, b, c, d, e and more".
func nodeList(names []string) string {
	if len(names) > maxNamedInMessage {
		return "node(s) " + strings.Join(names[:maxNamedInMessage], ", ") + " and more"
	}
	return "node(s) " + strings.Join(names, ", ")
}

// RelayNodes are the selected nodes as clients can reach them. publicOnly
// leaves out addresses that are not public (a node's InternalIP).
func RelayNodes(obs *Observation, publicOnly bool) []RelayNode {
	nodes := make([]RelayNode, 0, len(obs.Nodes))
	for _, n := range obs.Nodes {
		a := obs.Addresses[n.Name]
		rn := RelayNode{name: n.Name, addresses: a.Addresses, serving: obs.ReadyPods[n.Name] && !n.Spec.Unschedulable,
			zone: n.Labels[corev1.LabelTopologyZone]}
		if publicOnly && !a.Public {
			rn.addresses = nil
		}
		nodes = append(nodes, rn)
	}
	return nodes
}

// publishedAddresses are the addresses a TurnServer gives apps (status.urls,
// iceServers.json) or DNS: at most spec.urlNodesPerFamily serving nodes per
// IP family, chosen by rendezvous hashing on the TurnServer's name.
func publishedAddresses(ts *turnpikev1.TurnServer, obs *Observation, publicOnly bool) []netip.Addr {
	return pickAddresses(ts.Namespace+"/"+ts.Name, RelayNodes(obs, publicOnly), urlNodesPerFamily(ts))
}

// urlNodesPerFamily is spec.urlNodesPerFamily, DefaultURLNodesPerFamily
// when unset (the API server defaults it; objects built in memory may lack it).
func urlNodesPerFamily(ts *turnpikev1.TurnServer) int {
	if n := ts.Spec.URLNodesPerFamily; n > 0 {
		return int(n)
	}
	return DefaultURLNodesPerFamily
}

// urlHosts writes addresses as URI hosts: IPv6 in brackets (RFC 3986).
func urlHosts(addrs []netip.Addr) []string {
	hosts := make([]string, 0, len(addrs))
	for _, a := range addrs {
		if a.Is6() {
			hosts = append(hosts, "["+a.String()+"]")
		} else {
			hosts = append(hosts, a.String())
		}
	}
	return hosts
}

// turnURLs are the RFC 7065 URIs of every listener at the given hosts.
func turnURLs(ts *turnpikev1.TurnServer, hosts []string) []string {
	var urls []string
	for _, host := range hosts {
		for _, l := range ts.Spec.Listeners {
			scheme, transport := "turn", "udp"
			switch l.Protocol {
			case turnpikev1.ProtocolTCP:
				transport = "tcp"
			case turnpikev1.ProtocolTLS:
				scheme, transport = "turns", "tcp"
			case turnpikev1.ProtocolDTLS:
				scheme = "turns"
			}
			urls = append(urls, fmt.Sprintf("%s:%s:%d?transport=%s", scheme, host, l.Port, transport))
		}
	}
	return urls
}
