package client

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"
)

// Result is a node's answer about a key: its live values and the causal
// context of what the answer covers.
type Result struct {
	// Siblings are the key's live concurrent values: one after an ordinary
	// write, several after concurrent writes, none for a key that is absent
	// or deleted (ErrNotFound) and for a write without ReturnBody. Their
	// order carries no meaning.
	Siblings []Sibling
	// Context is the opaque causal context of the answer. Write with it
	// (WithContext) to supersede exactly the versions it covers: after a
	// read, every sibling read; after a write, what the write superseded
	// plus the write (with ReturnBody: every returned sibling).
	Context string
	// Deleted reports, with ErrNotFound, that the key's live versions are
	// all tombstones (rather than the key never having been written).
	Deleted bool
	// SiblingsWarning is the server's X-Siblings-Warning: the key has more
	// than 25 siblings, and writes that would add one are refused past 100.
	SiblingsWarning string
	// RingVersion is the X-Ring-Version of the node that answered.
	RingVersion string
}

// Sibling is one live value of a key.
type Sibling struct {
	// Value is the value, byte for byte as written (JSON values as the
	// server returns them in a 300: compacted).
	Value []byte
	// ContentType is the Content-Type it was written with.
	ContentType string
	// LastModified is when it was written, by the coordinator's clock
	// (second precision for a single value). For display only: it never
	// orders versions.
	LastModified time.Time
	// JSON reports that the content type is application/json or *+json and
	// the value is valid JSON.
	JSON bool
}

// Decode unmarshals the sibling's value as JSON into v.
func (s Sibling) Decode(v any) error {
	if err := json.Unmarshal(s.Value, v); err != nil {
		return fmt.Errorf("quorumkv: decoding a %s value: %w", s.ContentType, err)
	}
	return nil
}

// Value returns the key's value when it has exactly one; ErrSiblings (with
// Result.Siblings holding them all) when it has several; ErrNotFound when
// none.
func (r *Result) Value() ([]byte, error) {
	switch len(r.Siblings) {
	case 0:
		return nil, ErrNotFound
	case 1:
		return r.Siblings[0].Value, nil
	}
	return nil, fmt.Errorf("%w: %d siblings", ErrSiblings, len(r.Siblings))
}

// Decode unmarshals the key's value, as JSON, into v. Like Value, it
// refuses with ErrSiblings when there are several values: merge them (see
// Update) rather than pick one.
func (r *Result) Decode(v any) error {
	if _, err := r.Value(); err != nil {
		return err
	}
	return r.Siblings[0].Decode(v)
}

// isJSONType reports whether a Content-Type is application/json or *+json.
func isJSONType(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// singleSibling reads a 200 answer with one value.
func singleSibling(h http.Header, body []byte) Sibling {
	s := Sibling{Value: body, ContentType: h.Get("Content-Type")}
	if lm := h.Get("Last-Modified"); lm != "" {
		if t, err := http.ParseTime(lm); err == nil {
			s.LastModified = t
		}
	}
	s.JSON = isJSONType(s.ContentType) && json.Valid(body)
	return s
}

// siblingJSON is one sibling of a 300 (or returnbody) answer.
type siblingJSON struct {
	Value        json.RawMessage `json:"value"`
	Encoding     string          `json:"encoding"` // "json" or "base64"
	ContentType  string          `json:"content_type"`
	LastModified string          `json:"last_modified"`
}

// decodeSiblings reads a {"siblings":[...]} body.
func decodeSiblings(body []byte) ([]Sibling, error) {
	var doc struct {
		Siblings *[]siblingJSON `json:"siblings"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("quorumkv: decoding siblings: %w", err)
	}
	if doc.Siblings == nil {
		return nil, fmt.Errorf("quorumkv: decoding siblings: no \"siblings\" in %q", truncate(body, 128))
	}
	out := make([]Sibling, 0, len(*doc.Siblings))
	for i, sj := range *doc.Siblings {
		s := Sibling{ContentType: sj.ContentType}
		if sj.LastModified != "" {
			t, err := time.Parse(time.RFC3339Nano, sj.LastModified)
			if err != nil {
				return nil, fmt.Errorf("quorumkv: decoding sibling %d: last_modified: %w", i, err)
			}
			s.LastModified = t
		}
		switch sj.Encoding {
		case "json":
			if !json.Valid(sj.Value) {
				return nil, fmt.Errorf("quorumkv: decoding sibling %d: no JSON value", i)
			}
			s.Value, s.JSON = bytes.Clone(sj.Value), true
		case "base64":
			var b64 string
			if err := json.Unmarshal(sj.Value, &b64); err != nil {
				return nil, fmt.Errorf("quorumkv: decoding sibling %d: base64 value: %w", i, err)
			}
			v, err := base64.StdEncoding.DecodeString(b64)
			if err != nil {
				return nil, fmt.Errorf("quorumkv: decoding sibling %d: base64 value: %w", i, err)
			}
			s.Value = v
		default:
			return nil, fmt.Errorf("quorumkv: decoding sibling %d: unknown encoding %q", i, sj.Encoding)
		}
		out = append(out, s)
	}
	return out, nil
}
