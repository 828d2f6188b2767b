// Package render holds the operator's pure builders: from a TurnServer or
// TurnCredential and what the reconciler observed of the cluster, it
// computes the objects to write (relay ConfigMap, credential Secrets,
// DaemonSet, DNSEndpoint, pod annotations), the relay's relay.yaml and
// credentials.yaml, the status, the published URLs and the Events of a
// status change. It reads nothing and writes nothing: it imports API types
// and client-go's apply configurations, never a client, a cache or a
// manager (TestLayering), so its table tests run without an API server.
package render
