package controllers

import (
	"context"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// FieldOwner is the server-side apply field manager of everything the
// operator writes.
const FieldOwner = "turnpike-operator"

// applyIfChanged server-side applies desired unless the live object already
// holds exactly the fields this operator owns with the same values. extract
// is client-go's Extract<Kind>, which reads those fields from managedFields.
// So a resync of an unchanged TurnServer writes nothing, while a field that
// someone else changed or took over is put back.
func applyIfChanged[O client.Object, A runtime.ApplyConfiguration](
	ctx context.Context, c client.Client, key client.ObjectKey, live O, desired A,
	extract func(O, string) (A, error),
) (applied bool, err error) {
	err = c.Get(ctx, key, live)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return false, err
	default:
		current, err := extract(live, FieldOwner)
		if err == nil && equality.Semantic.DeepEqual(current, desired) {
			return false, nil
		}
	}
	return true, c.Apply(ctx, desired, client.FieldOwner(FieldOwner), client.ForceOwnership)
}

// patchStatus sets obj's status with set and patches it, unless unchanged
// says there is nothing to write. The patch carries obj's resourceVersion,
// so a status computed from a stale cache is refused (a conflict) instead of
// overwriting a newer one.
func patchStatus[O client.Object](ctx context.Context, c client.Client, obj O, unchanged bool, set func()) error {
	if unchanged {
		return nil
	}
	patch := client.MergeFromWithOptions(obj.DeepCopyObject().(O), client.MergeFromWithOptimisticLock{})
	set()
	return c.Status().Patch(ctx, obj, patch)
}
