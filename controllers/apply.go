package controllers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/util/csaupgrade"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// FieldOwner is the server-side apply field manager of everything the
// operator writes.
const FieldOwner = "turnpike-operator"

// applyIfChanged server-side applies desired unless the live object already
// holds exactly the fields this operator owns with the same values. extract
// is client-go's Extract<Kind>, which reads those fields from managedFields.
// So a resync of an unchanged TurnServer writes nothing, while a field that
// someone else changed or took over is put back. written keeps a pass that
// runs before the cache has seen the last apply from applying it again.
func applyIfChanged[O client.Object, A runtime.ApplyConfiguration](
	ctx context.Context, c client.Client, written *writeMemory, key client.ObjectKey, live O, desired A,
	extract func(O, string) (A, error),
) (applied bool, err error) {
	want, err := json.Marshal(desired)
	if err != nil {
		return false, err
	}
	err = c.Get(ctx, key, live)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return false, err
	default:
		current, err := extract(live, FieldOwner)
		if err == nil && !written.needsWrite(live, current, want) {
			return false, nil
		}
	}
	if err := c.Apply(ctx, desired, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return true, err
	}
	if live.GetUID() != "" {
		written.remember(live, want, resourceVersionOf(desired)) // desired holds the response
	}
	return true, nil
}

// resourceVersionOf reads metadata.resourceVersion of an apply
// configuration, which client-go's apply configurations have no getter for.
func resourceVersionOf(ac any) string {
	var o struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	b, err := json.Marshal(ac)
	if err == nil {
		_ = json.Unmarshal(b, &o)
	}
	return o.Metadata.ResourceVersion
}

// sameJSON reports whether a and b serialize to the same JSON, which is
// what the API server would store. It is the comparison for apply
// configurations: reflection-based equality trips over types with unexported
// fields (times, quantities), and JSON also treats an empty list and a
// missing one alike, as the API server does. Values that do not serialize
// count as different, so they get applied and the API server says why.
func sameJSON(a, b any) bool {
	x, err := json.Marshal(a)
	if err != nil {
		return false
	}
	y, err := json.Marshal(b)
	return err == nil && bytes.Equal(x, y)
}

// applyStatus server-side applies status as obj's whole status, as the
// operator's field manager, unless it serializes the same as obj's current
// status. The apply carries no resourceVersion: a status computed from a
// cache a moment behind is written rather than refused with a conflict (the
// event that made the cache newer brings another reconcile anyway), so there
// is no loop of 409s, each carrying the full status. Fields the operator
// applied before and leaves out now are removed.
func applyStatus(ctx context.Context, c client.Client, written *writeMemory, obj client.Object, current, status any) error {
	want, err := json.Marshal(status)
	if err != nil {
		return err
	}
	if !written.needsWrite(obj, current, want) {
		return nil
	}
	if err := takeOverStatus(ctx, c, obj); err != nil {
		return fmt.Errorf("taking over the status fields of earlier writers: %w", err)
	}
	gvk, err := apiutil.GVKForObject(obj, c.Scheme())
	if err != nil {
		return err
	}
	st, err := runtime.DefaultUnstructuredConverter.ToUnstructured(status)
	if err != nil {
		return err
	}
	u := &unstructured.Unstructured{Object: map[string]any{"status": st}}
	u.SetGroupVersionKind(gvk)
	u.SetNamespace(obj.GetNamespace())
	u.SetName(obj.GetName())
	if err := c.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return err
	}
	written.remember(obj, want, u.GetResourceVersion()) // u holds the response
	return nil
}

// writeMemory remembers, per object, the status (or other part, such as a
// relay pod's annotation) the operator last wrote and the resourceVersion
// that write produced. A reconcile that runs before the cache has seen that
// write sees the object at an older version, and would write the same
// again: a patch that changes nothing. While the cache shows a version
// older than the write, what is wanted is compared with what was written;
// once it shows the write or a newer version (someone else's, such as an
// older operator's during an upgrade, or a user's), with the cache. The
// zero value is ready to use.
//
// The cache can be behind in more ways than showing the version the write
// was made on: with two writes in flight (the status applied on top of
// version 10, making 11, then again on 10, making 12, the cache then
// showing 11), or with someone else's write in between (a relay pod turns
// ready at 11 while the operator annotates the pod it saw at 10, making 12;
// the cache then shows 11, without the annotation). resourceVersions of
// one resource are ordered (KEP-5504, resourceversion.CompareResourceVersion);
// one that does not parse is compared with the cache.
type writeMemory struct {
	mu      sync.Mutex
	applied map[types.UID]lastWrite
}

type lastWrite struct {
	value []byte
	wrote string // the resourceVersion the write produced
}

// maxRemembered bounds the memory; past it, the cache alone decides again.
const maxRemembered = 10000

// needsWrite reports whether value (JSON) differs from what obj holds;
// current is obj's value as the cache shows it.
func (m *writeMemory) needsWrite(obj client.Object, current any, value []byte) bool {
	m.mu.Lock()
	last, ok := m.applied[obj.GetUID()]
	m.mu.Unlock()
	if ok {
		if order, err := resourceversion.CompareResourceVersion(obj.GetResourceVersion(), last.wrote); err == nil && order < 0 {
			return !bytes.Equal(last.value, value)
		}
	}
	cur, err := json.Marshal(current)
	return err != nil || !bytes.Equal(cur, value)
}

// remember records that value was written to obj, producing
// resourceVersion wrote.
func (m *writeMemory) remember(obj client.Object, value []byte, wrote string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.applied == nil || len(m.applied) >= maxRemembered {
		m.applied = map[types.UID]lastWrite{}
	}
	m.applied[obj.GetUID()] = lastWrite{value: value, wrote: wrote}
}

// takeOverStatus makes the operator's field manager the owner of the status
// fields that an older operator wrote with a merge patch (operation Update),
// so that leaving a field out of the applied status removes it. Without it
// a field the new status leaves out, such as the URLs of relays that
// stopped serving, would stay as the old writer left it. It writes once per
// object, and nothing when there is nothing to take over; the patch carries
// the resourceVersion, so it fails rather than overwrite newer fields.
func takeOverStatus(ctx context.Context, c client.Client, obj client.Object) error {
	writers := sets.New[string]()
	for _, m := range obj.GetManagedFields() {
		if m.Subresource == "status" && m.Operation == metav1.ManagedFieldsOperationUpdate && m.Manager != FieldOwner {
			writers.Insert(m.Manager)
		}
	}
	if writers.Len() == 0 {
		return nil
	}
	patch, err := csaupgrade.UpgradeManagedFieldsPatch(obj, writers, FieldOwner, csaupgrade.Subresource("status"))
	if err != nil || patch == nil {
		return err
	}
	return c.Patch(ctx, obj.DeepCopyObject().(client.Object), client.RawPatch(types.JSONPatchType, patch))
}
