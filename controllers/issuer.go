package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/turnpike-dev/turnpike/controllers/render"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	turnpikev1 "github.com/turnpike-dev/turnpike/api/v1alpha1"
	"github.com/turnpike-dev/turnpike/relay/restauth"
)

// IssuerPath is the URL path of the credential issuing endpoint.
const IssuerPath = "/api/v1/namespaces/{namespace}/turncredentials/{name}"

// IssueVerb is the RBAC verb that lets a caller be issued credentials of a
// TurnCredential, e.g. a Role rule {apiGroups: [turnpike.dev], resources:
// [turncredentials], resourceNames: [my-cred], verbs: [use]}.
const IssueVerb = "use"

// issueResponse is the TURN REST API response (draft-uberti-behave-turn-rest).
type issueResponse struct {
	Username string   `json:"username"`
	Password string   `json:"password"`
	TTL      int64    `json:"ttl"`
	URIs     []string `json:"uris"`
}

// Issuer hands out TURN credentials to workloads in the cluster: it
// authenticates the caller's service-account token with a TokenReview and
// checks with a SubjectAccessReview that the caller may "use" the
// TurnCredential. For a shared secret it mints a short-lived REST username
// and password; for a static credential it returns the current one.
type Issuer struct {
	Client client.Client
	// Cache is the cache Client reads (see TurnServerReconciler.Cache).
	Cache cache.Cache
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// loads is what the relays report of their load; nil chooses by rank
	// and zone alone.
	loads *relayLoads
}

// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// Handler routes the issuing endpoint.
func (i *Issuer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+IssuerPath, i.issue)
	return mux
}

func (i *Issuer) issue(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	user := r.URL.Query().Get("username")
	if strings.Contains(user, ":") || len(user) > 128 {
		i.fail(w, "bad_request", http.StatusBadRequest, "username must have no ':' and at most 128 characters")
		return
	}
	caller, err := i.authenticate(ctx, r.Header.Get("Authorization"))
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="turnpike"`)
		i.fail(w, "unauthenticated", http.StatusUnauthorized, err.Error())
		return
	}
	allowed, err := i.authorize(ctx, caller, ns, name)
	switch {
	case err != nil:
		i.fail(w, "error", http.StatusInternalServerError, "authorization check failed")
		log.FromContext(ctx).Error(err, "SubjectAccessReview")
		return
	case !allowed:
		i.fail(w, "forbidden", http.StatusForbidden,
			fmt.Sprintf("%s may not %s turncredentials %s/%s", caller.Username, IssueVerb, ns, name))
		return
	}
	seed := user
	if seed == "" {
		seed = caller.Username
	}
	zone := r.URL.Query().Get("zone")
	if len(zone) > 63 {
		i.fail(w, "bad_request", http.StatusBadRequest, "zone must have at most 63 characters (a label value)")
		return
	}
	if zone == "" {
		zone = i.callerZone(ctx, caller)
	}
	resp, status, err := i.credentials(ctx, ns, name, user, requester{seed: seed, zone: zone})
	if err != nil {
		i.fail(w, strings.ToLower(strings.ReplaceAll(http.StatusText(status), " ", "_")), status, err.Error())
		return
	}
	issueRequests.WithLabelValues("issued").Inc()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(resp)
}

func (i *Issuer) fail(w http.ResponseWriter, result string, status int, msg string) {
	issueRequests.WithLabelValues(result).Inc()
	http.Error(w, msg, status)
}

// authenticate checks a bearer token with the API server.
func (i *Issuer) authenticate(ctx context.Context, header string) (authnv1.UserInfo, error) {
	token, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || strings.TrimSpace(token) == "" {
		return authnv1.UserInfo{}, errors.New("a service-account token is required: Authorization: Bearer <token>")
	}
	review := &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: strings.TrimSpace(token)}}
	if err := i.Client.Create(ctx, review); err != nil {
		return authnv1.UserInfo{}, fmt.Errorf("token review failed: %w", err)
	}
	if !review.Status.Authenticated {
		return authnv1.UserInfo{}, errors.New("token not accepted by the API server")
	}
	return review.Status.User, nil
}

// authorize asks the API server whether the caller may use the TurnCredential.
func (i *Issuer) authorize(ctx context.Context, u authnv1.UserInfo, ns, name string) (bool, error) {
	extra := map[string]authzv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = authzv1.ExtraValue(v)
	}
	sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: u.Username, UID: u.UID, Groups: u.Groups, Extra: extra,
		ResourceAttributes: &authzv1.ResourceAttributes{
			Namespace: ns, Verb: IssueVerb, Group: turnpikev1.GroupVersion.Group,
			Resource: "turncredentials", Name: name,
		},
	}}
	if err := i.Client.Create(ctx, sar); err != nil {
		return false, err
	}
	return sar.Status.Allowed, nil
}

// requester is who the relay nodes of a response are chosen for.
type requester struct {
	seed string // the user, or the caller: the same one keeps its nodes
	zone string // its topology zone, "" when unknown
}

// nodeNameExtra is the key of a bound service-account token's user extra
// that names the node of the pod the token was issued to.
const nodeNameExtra = "authentication.kubernetes.io/node-name"

// callerZone is the topology zone of the node the caller's pod runs on,
// when its token names that node (a pod's projected token does), else "".
// It is a preference: a node that cannot be read leaves it unknown.
func (i *Issuer) callerZone(ctx context.Context, caller authnv1.UserInfo) string {
	names := caller.Extra[nodeNameExtra]
	if len(names) != 1 {
		return ""
	}
	node := &corev1.Node{}
	if err := i.Client.Get(ctx, client.ObjectKey{Name: names[0]}, node); err != nil {
		log.FromContext(ctx).V(1).Info("caller's node unreadable; no zone", "node", names[0], "error", err.Error())
		return ""
	}
	return node.Labels[corev1.LabelTopologyZone]
}

// credentials builds the response for an authorized caller, with relay
// nodes chosen for who (see render.URIsNear).
func (i *Issuer) credentials(ctx context.Context, ns, name, user string, who requester) (*issueResponse, int, error) {
	tc := &turnpikev1.TurnCredential{}
	if err := i.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, tc); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, http.StatusNotFound, fmt.Errorf("TurnCredential %s/%s not found", ns, name)
		}
		return nil, http.StatusInternalServerError, err
	}
	s := &corev1.Secret{}
	if err := i.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: render.StateSecretName(tc)}, s); err != nil {
		return nil, http.StatusServiceUnavailable, fmt.Errorf("TurnCredential %s/%s is not issued yet", ns, name)
	}
	st, err := render.DecodeCredentialState(s.Data)
	if err != nil || st.Current == "" {
		return nil, http.StatusServiceUnavailable, fmt.Errorf("TurnCredential %s/%s has no usable secret", ns, name)
	}
	uris, err := i.uris(ctx, ns, tc.Spec.TurnServerRef.Name, who)
	if err != nil {
		return nil, http.StatusInternalServerError, err
	}
	now := i.now()
	if tc.Spec.Type == turnpikev1.CredentialStatic {
		return &issueResponse{Username: tc.Spec.Username, Password: st.Current, TTL: staticTTL(tc, st, now), URIs: uris}, 0, nil
	}
	ttl := time.Hour
	if tc.Spec.TTL != nil {
		ttl = tc.Spec.TTL.Duration
	}
	username, password := restauth.Mint(st.Current, user, now, ttl)
	return &issueResponse{Username: username, Password: password, TTL: int64(ttl.Seconds()), URIs: uris}, 0, nil
}

// uris is the URIs of TurnServer ns/name for one requester, none when the
// TurnServer does not exist.
func (i *Issuer) uris(ctx context.Context, ns, name string, who requester) ([]string, error) {
	ts := &turnpikev1.TurnServer{}
	if err := i.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, ts); apierrors.IsNotFound(err) {
		return []string{}, nil
	} else if err != nil {
		return nil, err
	}
	var nodes []render.RelayNode
	if ts.Spec.Hostname == "" {
		var err error
		if nodes, err = observeRelayNodes(ctx, cachedObjects{cache: i.Cache, reader: i.Client}, ts); err != nil {
			return nil, err
		}
	}
	var loads map[string]int
	if i.loads != nil {
		loads = i.loads.of(types.NamespacedName{Namespace: ns, Name: name})
	}
	return render.URIsNear(ts, nodes, who.seed, who.zone, loads), nil
}

// staticTTL is how long a static password is sure to keep working: until
// the next rotation is published plus the overlap, or a day without a schedule.
func staticTTL(tc *turnpikev1.TurnCredential, st render.CredentialState, now time.Time) int64 {
	next := render.NextRotation(tc, st)
	if next.IsZero() {
		return int64((24 * time.Hour).Seconds())
	}
	return max(int64(next.Add(render.Overlap(tc)).Sub(now).Seconds()), 0)
}

func (i *Issuer) now() time.Time {
	if i.Now != nil {
		return i.Now()
	}
	return time.Now()
}

// IssuerServer runs the issuing endpoint in the manager. Every replica
// serves it, not only the leader: it only reads.
type IssuerServer struct {
	Addr    string
	Handler http.Handler
}

func (s *IssuerServer) NeedLeaderElection() bool { return false }

// Start serves until ctx ends.
func (s *IssuerServer) Start(ctx context.Context) error {
	l, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("credential issuer: %w", err)
	}
	srv := &http.Server{Handler: s.Handler, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
