package controllers

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
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
)

// observation is what the reconciler saw of the cluster for one TurnServer.
type observation struct {
	nodes          []*corev1.Node           // selected nodes, sorted by name
	addresses      map[string]nodeAddresses // by node name
	readyPods      map[string]bool          // node name -> its relay pod is ready
	daemonSet      *appsv1.DaemonSet        // nil until created
	conflict       *portConflict            // set when an older TurnServer holds our ports
	missingTLSKeys []string                 // problems with referenced TLS Secrets
	// credentialsExpire is when a key in the relay bundle next expires.
	credentialsExpire time.Time
	// stunNodes is set when a ready relay discovers its address with STUN.
	stunNodes bool
	// applyErr is why writing the generated objects failed, if it did.
	applyErr error
}

// computeStatus derives a TurnServer's status from what was observed. It
// starts from the current status so conditions keep their transition times.
func computeStatus(ts *turnpikev1.TurnServer, obs *observation) turnpikev1.TurnServerStatus {
	st := turnpikev1.TurnServerStatus{
		ObservedGeneration: ts.Generation,
		Conditions:         append([]metav1.Condition(nil), ts.Status.Conditions...),
	}
	set := func(t string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: ts.Generation,
		})
	}

	var published []string
	anyReady := false
	for _, n := range obs.nodes {
		a := obs.addresses[n.Name]
		ns := turnpikev1.NodeStatus{Name: n.Name, Source: a.source, Public: a.public, Ready: obs.readyPods[n.Name]}
		for _, ip := range a.addresses {
			ns.Addresses = append(ns.Addresses, ip.String())
		}
		st.Nodes = append(st.Nodes, ns)
		if ns.Ready {
			anyReady = true
			published = append(published, ns.Addresses...)
			if ts.Spec.Hostname == "" {
				st.URLs = append(st.URLs, turnURLs(ts, urlHosts(a.addresses))...)
			}
		}
	}
	if ts.Spec.Hostname != "" && anyReady {
		st.URLs = turnURLs(ts, []string{ts.Spec.Hostname})
	}
	st.AddressSummary = strings.Join(published, ",")
	sort.Strings(st.URLs)

	if ds := obs.daemonSet; ds != nil {
		st.DesiredNodes = ds.Status.DesiredNumberScheduled
		st.ReadyNodes = ds.Status.NumberReady
	}
	st.NodeSummary = fmt.Sprintf("%d/%d", st.ReadyNodes, st.DesiredNodes)

	switch {
	case obs.conflict != nil:
		msg := obs.conflict.message()
		set(turnpikev1.ConditionReady, metav1.ConditionFalse, ReasonPortConflict, msg)
		set(turnpikev1.ConditionProgressing, metav1.ConditionFalse, ReasonPortConflict, "not rolled out: "+msg)
	case obs.daemonSet == nil:
		set(turnpikev1.ConditionReady, metav1.ConditionFalse, ReasonPending, "relay DaemonSet not created yet")
		set(turnpikev1.ConditionProgressing, metav1.ConditionTrue, ReasonPending, "relay DaemonSet not created yet")
	default:
		setRolloutConditions(set, obs.daemonSet)
	}

	var degraded []string
	reason := ReasonAsExpected
	if obs.applyErr != nil {
		degraded, reason = append(degraded, obs.applyErr.Error()+"; retrying"), ReasonApplyFailed
	}
	if obs.conflict != nil {
		degraded = append(degraded, obs.conflict.message())
		if reason == ReasonAsExpected {
			reason = ReasonPortConflict
		}
	}
	if len(obs.missingTLSKeys) > 0 {
		degraded = append(degraded, strings.Join(obs.missingTLSKeys, "; "))
		if reason == ReasonAsExpected {
			reason = ReasonTLSSecretMissing
		}
	}
	if private := notPublicNodes(st.Nodes); len(private) > 0 {
		degraded = append(degraded, fmt.Sprintf("no public address known for node(s) %s: publishing their InternalIP; set the %s annotation or spec.externalAddresses, or turn on spec.stun",
			strings.Join(private, ", "), turnpikev1.AnnotationExternalIP))
		if reason == ReasonAsExpected {
			reason = ReasonAddressNotPublic
		}
	}
	if len(degraded) > 0 {
		set(turnpikev1.ConditionDegraded, metav1.ConditionTrue, reason, strings.Join(degraded, "; "))
	} else {
		set(turnpikev1.ConditionDegraded, metav1.ConditionFalse, ReasonAsExpected, "")
	}
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

// notPublicNodes are the nodes that fell back to their InternalIP. Nodes
// relying on STUN are not listed: discovery is what the user asked for.
func notPublicNodes(nodes []turnpikev1.NodeStatus) []string {
	var out []string
	for _, n := range nodes {
		if n.Source == turnpikev1.AddressFromInternalIP {
			out = append(out, n.Name)
		}
	}
	return out
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
