// Package controllers holds the reconcilers of TurnServer and TurnCredential.
package controllers
