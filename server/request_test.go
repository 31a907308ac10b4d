package server

import (
	"errors"
	"io"
	"net/url"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/quorumkv/quorumkv/storage"
)

func TestParseKVPath(t *testing.T) {
	for _, tc := range []struct {
		path, bucket, key string
		ok                bool
	}{
		{"/v1/kv/b/k", "b", "k", true},
		{"/v1/kv/b/a%2Fb", "b", "a/b", true},
		{"/v1/kv/b/a/b", "b", "a/b", true},
		{"/v1/kv/b/%252F", "b", "%2F", true},
		{"/v1/kv/b/%00", "b", "\x00", true},
		{"/v1/kv/B.u_c-1/k", "B.u_c-1", "k", true},
		{"/v1/kv/b/", "", "", false},
		{"/v1/kv/b", "", "", false},
		{"/v1/kv//k", "", "", false},
		{"/v1/kv/b%20x/k", "", "", false},
		{"/v1/kv/b/%zz", "", "", false},
		{"/v1/kv/b/" + strings.Repeat("x", MaxKeyLen), "b", strings.Repeat("x", MaxKeyLen), true},
		{"/v1/kv/b/" + strings.Repeat("%41", MaxKeyLen+1), "", "", false},
		{"/v2/kv/b/k", "", "", false},
	} {
		b, k, err := parseKVPath(tc.path)
		if (err == nil) != tc.ok || b != tc.bucket || k != tc.key {
			t.Errorf("%q: got %q %q %v", tc.path, b, k, err)
		}
		if err != nil && !errors.Is(err, ErrBadRequest) {
			t.Errorf("%q: error %v is not ErrBadRequest", tc.path, err)
		}
	}
}

// FuzzParseKVPath checks the key decoding rule: any key the client escapes
// with url.PathEscape decodes to itself, and no input panics or yields an
// invalid bucket or oversized key.
func FuzzParseKVPath(f *testing.F) {
	f.Add("b", "k")
	f.Add("bucket", "a/b")
	f.Add("x", "%2F\x00\xff")
	f.Fuzz(func(t *testing.T, bucket, key string) {
		b, k, err := parseKVPath("/v1/kv/" + bucket + "/" + url.PathEscape(key))
		if err == nil {
			if validateBucket(b) != nil || len(k) == 0 || len(k) > MaxKeyLen {
				t.Fatalf("accepted bucket %q key %q", b, k)
			}
			if b == bucket && k != key {
				t.Fatalf("key %q decoded as %q", key, k)
			}
		}
		if validateBucket(bucket) == nil && len(key) > 0 && len(key) <= MaxKeyLen && !strings.Contains(bucket, "/") {
			if err != nil || b != bucket || k != key {
				t.Fatalf("valid %q/%q: got %q %q %v", bucket, key, b, k, err)
			}
		}
	})
}

// FuzzInternalKey feeds garbage to the internal API's key decoder.
func FuzzInternalKey(f *testing.F) {
	f.Add(appendKey(nil, storage.Key{Partition: 3, Bucket: "b", Key: "k"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, rest, err := decodeKey(b)
		if err != nil {
			return
		}
		enc := appendKey(nil, k)
		if string(enc)+string(rest) != string(b) && len(enc)+len(rest) == len(b) {
			t.Fatalf("re-encoding differs")
		}
		k2, rest2, err := decodeKey(append(enc, rest...))
		if err != nil || k2 != k || string(rest2) != string(rest) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func TestReadAll(t *testing.T) {
	body := strings.Repeat("x", 3000)
	for _, tt := range []struct {
		name   string
		length int64
	}{
		{"declared", 3000},
		{"unknown", -1},
		{"declared short", 10},
		{"declared long", 5000},
		{"over the limit", 1 << 30},
	} {
		got, err := readAll(iotest.OneByteReader(strings.NewReader(body)), tt.length, 1<<20)
		if err != nil || string(got) != body {
			t.Errorf("%s: %d bytes, %v; want all %d", tt.name, len(got), err, len(body))
		}
	}
	if _, err := readAll(iotest.ErrReader(io.ErrUnexpectedEOF), 10, 100); err != io.ErrUnexpectedEOF {
		t.Errorf("a failing reader: %v", err)
	}
}
