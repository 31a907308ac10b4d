package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// callConfig applies opts over the client's defaults.
func (c *Client) callConfig(opts []CallOption) (*callConfig, error) {
	cc := &callConfig{r: c.cfg.r, w: c.cfg.w}
	for _, o := range opts {
		o(cc)
	}
	switch {
	case cc.r < 0:
		return nil, fmt.Errorf("quorumkv: R(%d): must be 1..N", cc.r)
	case cc.w < 0:
		return nil, fmt.Errorf("quorumkv: W(%d): must be 1..N", cc.w)
	case cc.timeout < 0:
		return nil, fmt.Errorf("quorumkv: Timeout(%v): must be positive", cc.timeout)
	case cc.requestID != "" && !validRequestID(cc.requestID):
		return nil, fmt.Errorf("quorumkv: RequestID(%q): must be 1 to 64 bytes of [A-Za-z0-9._:-]", cc.requestID)
	}
	return cc, nil
}

// bound applies the call's Timeout to ctx.
func (cc *callConfig) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if cc.timeout > 0 {
		return context.WithTimeout(ctx, cc.timeout)
	}
	return context.WithCancel(ctx)
}

// readQuery is the query of a read (and of the read a plain write makes).
func (cc *callConfig) readQuery() url.Values {
	q := url.Values{}
	if cc.r > 0 {
		q.Set("r", strconv.Itoa(cc.r))
	}
	if cc.strict {
		q.Set("sloppy", "false")
	}
	return q
}

// Get reads bucket/key from R replicas (R(n), or WithDefaultR, or the
// node's default). The Result holds every live sibling and the causal
// context; use Result.Value or Result.Decode when one value is expected.
// For an absent or deleted key it returns ErrNotFound together with a
// Result that has no siblings and the 404's context (writing with it
// creates the key without overwriting a concurrent creation).
//
// Call options: R, Sloppy, Timeout. Reads are retried on retryable errors
// (IsRetryable), each attempt on the next replica or node.
func (c *Client) Get(ctx context.Context, bucket, key string, opts ...CallOption) (*Result, error) {
	cc, err := c.callConfig(opts)
	if err != nil {
		return nil, err
	}
	ctx, cancel := cc.bound(ctx)
	defer cancel()
	return c.get(ctx, bucket, key, cc)
}

func (c *Client) get(ctx context.Context, bucket, key string, cc *callConfig) (*Result, error) {
	resp, err := c.do(ctx, &request{method: http.MethodGet, bucket: bucket, key: key, query: cc.readQuery()}, cc)
	if err != nil {
		return nil, err
	}
	res := resultHeaders(resp)
	switch resp.status {
	case http.StatusOK:
		res.Siblings = []Sibling{singleSibling(resp.header, resp.body)}
	case http.StatusMultipleChoices:
		if res.Siblings, err = decodeSiblings(resp.body); err != nil {
			return nil, err
		}
	case http.StatusNotFound:
		var eb errorBody
		_ = json.Unmarshal(resp.body, &eb)
		res.Deleted = eb.Message == "deleted"
		return res, fmt.Errorf("%w: %s/%q", ErrNotFound, bucket, key)
	default:
		return nil, &APIError{StatusCode: resp.status, Message: "unexpected status for GET"}
	}
	return res, nil
}

func resultHeaders(resp *response) *Result {
	return &Result{
		Context:         resp.header.Get("X-Context"),
		SiblingsWarning: resp.header.Get("X-Siblings-Warning"),
		RingVersion:     resp.header.Get("X-Ring-Version"),
	}
}

// Put writes value as a new version of bucket/key, acknowledged by W
// replicas (W(n), or WithDefaultW, or the node's default). With
// WithContext it supersedes exactly the versions that context covers, and
// versions written concurrently remain as siblings; without it, what a read
// at R sees when the write arrives. The Result has the new causal context
// (and, with ReturnBody, the key's live siblings after the write).
//
// Each Put carries one X-Request-Id (RequestID, or a random one) on every
// attempt, so the client retries it on retryable errors (a timeout, a 503:
// outcome unknown) without ever adding a sibling for the same write. A
// *QuorumError that survives the retries still means "outcome unknown",
// not "nothing stored".
//
// Call options: W, R (the read of a write without WithContext), Sloppy,
// Timeout, WithContext, ContentType (default application/octet-stream),
// ReturnBody, RequestID.
func (c *Client) Put(ctx context.Context, bucket, key string, value []byte, opts ...CallOption) (*Result, error) {
	cc, err := c.callConfig(opts)
	if err != nil {
		return nil, err
	}
	ctx, cancel := cc.bound(ctx)
	defer cancel()
	if value == nil {
		value = []byte{}
	}
	return c.write(ctx, http.MethodPut, bucket, key, value, cc)
}

// Delete writes a tombstone for bucket/key: the same rules, options and
// retries as Put (without a value). With WithContext it deletes exactly the
// versions the context covers; concurrent writes survive as siblings.
// Deleting an absent key succeeds.
func (c *Client) Delete(ctx context.Context, bucket, key string, opts ...CallOption) error {
	cc, err := c.callConfig(opts)
	if err != nil {
		return err
	}
	ctx, cancel := cc.bound(ctx)
	defer cancel()
	_, err = c.write(ctx, http.MethodDelete, bucket, key, nil, cc)
	return err
}

func (c *Client) write(ctx context.Context, method, bucket, key string, value []byte, cc *callConfig) (*Result, error) {
	q := cc.readQuery()
	if cc.w > 0 {
		q.Set("w", strconv.Itoa(cc.w))
	}
	if cc.returnBody {
		q.Set("returnbody", "true")
	}
	req := &request{method: method, bucket: bucket, key: key, query: q, body: value, requestID: cc.requestID}
	if req.requestID == "" {
		req.requestID = newRequestID()
	}
	if cc.hasContext {
		req.context = cc.context
	}
	if method == http.MethodPut {
		req.contentType = cc.contentType
		if req.contentType == "" {
			req.contentType = "application/octet-stream"
		}
	}
	resp, err := c.do(ctx, req, cc)
	if err != nil {
		return nil, err
	}
	res := resultHeaders(resp)
	switch resp.status {
	case http.StatusNoContent:
	case http.StatusOK:
		if res.Siblings, err = decodeSiblings(resp.body); err != nil {
			return nil, err
		}
	default:
		return nil, decodeError(resp.status, resp.body)
	}
	return res, nil
}

// GetJSON reads bucket/key like Client.Get and decodes its value, as JSON,
// into a T. It returns ErrSiblings (with the Result holding every sibling)
// when the key has several values, and ErrNotFound (with the Result
// holding the 404's context) when it has none; the Result is nil only when
// the read itself failed.
func GetJSON[T any](ctx context.Context, c *Client, bucket, key string, opts ...CallOption) (T, *Result, error) {
	var v T
	res, err := c.Get(ctx, bucket, key, opts...)
	if err != nil {
		return v, res, err
	}
	if err := res.Decode(&v); err != nil {
		return v, res, err
	}
	return v, res, nil
}

// PutJSON writes v, marshalled as JSON, like Client.Put, with Content-Type
// application/json (unless ContentType says otherwise).
func PutJSON(ctx context.Context, c *Client, bucket, key string, v any, opts ...CallOption) (*Result, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("quorumkv: encoding %T: %w", v, err)
	}
	return c.Put(ctx, bucket, key, b, append([]CallOption{ContentType("application/json")}, opts...)...)
}

// Update is a read-modify-write of bucket/key: it reads the key (an absent
// or deleted key gives fn no siblings), calls fn with every sibling read,
// and writes the value fn returns with the read's causal context, so that
// the write supersedes exactly the siblings fn saw. An error from fn aborts
// the update (nothing is written) and is returned as is. The Result is the
// write's (see Put).
//
// Update is not a transaction and takes no lock. Two Updates that run
// concurrently both succeed, and their writes become siblings; the next
// Update (or read) sees both, and its fn merges them. So fn must merge
// siblings without losing either side, and be correct when called with
// any number of them: take the union of sets, add up per-writer counters,
// merge maps by key; never "pick one" (that silently drops the other
// writer's change). For example, a set of strings held as a JSON array:
//
//	_, err := c.Update(ctx, "tags", "doc1", func(siblings []client.Sibling) ([]byte, error) {
//		set := map[string]bool{"new-tag": true}
//		for _, s := range siblings {
//			var tags []string
//			if err := s.Decode(&tags); err != nil {
//				return nil, err
//			}
//			for _, t := range tags {
//				set[t] = true
//			}
//		}
//		return json.Marshal(slices.Sorted(maps.Keys(set)))
//	}, client.ContentType("application/json"))
//
// Call options apply to both requests (R and Sloppy to the read, W to the
// write; Timeout bounds the whole update); WithContext is replaced by the
// read's context. The written Content-Type is ContentType's, else the
// first sibling's, else application/octet-stream.
func (c *Client) Update(ctx context.Context, bucket, key string, fn func(siblings []Sibling) ([]byte, error), opts ...CallOption) (*Result, error) {
	cc, err := c.callConfig(opts)
	if err != nil {
		return nil, err
	}
	ctx, cancel := cc.bound(ctx)
	defer cancel()
	read, err := c.get(ctx, bucket, key, cc)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	value, err := fn(read.Siblings)
	if err != nil {
		return nil, err
	}
	if value == nil {
		value = []byte{}
	}
	wc := *cc
	wc.context, wc.hasContext = read.Context, true
	if wc.contentType == "" && len(read.Siblings) > 0 {
		wc.contentType = read.Siblings[0].ContentType
	}
	return c.write(ctx, http.MethodPut, bucket, key, value, &wc)
}
