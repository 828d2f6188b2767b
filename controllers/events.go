package controllers

import (
	"github.com/turnpike-dev/turnpike/controllers/render"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
)

// recordEvents records evs on obj; rec nil records nothing.
func recordEvents(rec events.EventRecorder, obj runtime.Object, evs []render.Event) {
	if rec == nil {
		return
	}
	for _, e := range evs {
		typ := corev1.EventTypeNormal
		if e.Warning {
			typ = corev1.EventTypeWarning
		}
		rec.Eventf(obj, nil, typ, e.Reason, "Reconcile", "%s", e.Note)
	}
}
