// Package testreg runs real, in-process container registries for tests: go-containerregistry's
// registry behind httptest, plus handler wrappers that make it behave like Docker Hub (a
// bearer-token realm), misbehave on purpose (faults) or report what was asked (a counter).
//
// How do I use it?
//
//	reg := testreg.New(t)                                   // http://127.0.0.1:PORT
//	img := testreg.Image(t, "linux/amd64", testreg.Layer(t, testreg.File{Name: "hello", Body: "hi"}))
//	reg.Push(t, "library/app:1", img)                       // bypasses auth and faults
//	ref := reg.Ref("library/app:1")                         // "127.0.0.1:PORT/library/app:1"
//	reg.Counter.Count("GET", testreg.KindBlob)              // requests seen so far
//
// Options add behaviour in front of the registry, outermost first: the counter sees every
// request, then faults apply, then the token check:
//
//	reg := testreg.New(t, testreg.WithToken(testreg.TokenConfig{User: "u", Password: "p"}),
//	    testreg.WithFaults(testreg.Fault{Kind: testreg.KindBlob, Times: 1, Action: testreg.Status(500)}))
//
// A Recorder is a second loopback server that records the headers it receives; point a
// Redirect fault at it to prove credentials do not follow a redirect to another host.
//
// Everything listens on 127.0.0.1 only and is closed by t.Cleanup.
package testreg
