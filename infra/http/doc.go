// Package httpapi is the HTTP plumbing every Taki route uses: RFC 9457 problem responses, strict JSON
// decoding, request ids, access logs, panic recovery, Prometheus metrics, health checks and the OpenAPI
// document. Routes themselves live in routes.go.
//
// The engine is wired in this order, so that the request id exists before anything logs, the access log
// and the metrics see the status a recovered panic produced, and the body limit applies to every route:
//
//	e := gin.New()
//	e.HandleMethodNotAllowed = true // without it a wrong method gets NoRoute's 404, not NoMethod's 405
//	e.ContextWithFallback = true    // c.Done/c.Err/c.Value follow the request context
//	_ = e.SetTrustedProxies(nil)    // or the load balancer's addresses; else any client's X-Forwarded-For is believed
//	e.Use(RequestID(), AccessLog(logger), metrics.Middleware(), Recovery(logger), BodyLimit())
//	e.NoRoute(NoRoute())
//	e.NoMethod(NoMethod())
//
// gin runs the engine's middleware for NoRoute and NoMethod too, so 404 and 405 answers carry a request
// id, are logged and are counted (under the route "unmatched").
package httpapi
