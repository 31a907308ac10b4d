// Package client is the Go client of quorumkv, a Dynamo-style, eventually
// consistent JSON document store spoken to over HTTP.
//
//	c, err := client.New([]string{"127.0.0.1:8080", "127.0.0.1:8081"})
//	if err != nil { ... }
//	defer c.Close()
//	_, err = client.PutJSON(ctx, c, "users", "ada", User{Name: "Ada"})
//	u, res, err := client.GetJSON[User](ctx, c, "users", "ada")
//
// Operations take a context and per-call options (R, W, Sloppy, Timeout,
// WithContext, ContentType, ReturnBody, RequestID). Reads return a Result
// holding every concurrent value (sibling) and the opaque causal context of
// the read; Result.Decode refuses with ErrSiblings when there are several.
// Update does the read-modify-write that resolves siblings: it is not a
// transaction, so its merge function must merge (a union, per-writer
// counters), never pick one.
//
// Routing: by default (KeyAware) the client loads the cluster's partition
// table from GET /v1/cluster, computes each key's partition with the ring
// package (the same code the nodes use), and sends the request to one of
// the key's replicas, which coordinates it without a forwarding hop. It
// refreshes the table in the background and as soon as a response's
// X-Ring-Version differs from its own. RoundRobin rotates over the
// configured endpoints instead.
//
// Retries: network errors, timeouts, 503s and quorum failures are retried
// (WithRetries: 3 attempts, full-jitter backoff from 50ms to 1s by
// default), each attempt on the next replica or node, never past the
// context's deadline. Every Put and Delete carries one random X-Request-Id,
// the same on every attempt; the server collapses versions with the same
// request id, so a write retried after a timeout never adds a sibling.
//
// See docs/client.md in the repository for a guide, and docs/api.md for
// the HTTP API the client wraps.
package client
