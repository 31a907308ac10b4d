package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"maps"
	"slices"

	"github.com/quorumkv/quorumkv/client"
)

// exampleEndpoints returns the HTTP addresses of a 5-node cluster (N=3)
// running in this process, started on first use and stopped when the tests
// end. In a program these would be the addresses of your nodes.
func exampleEndpoints() []string {
	c, err := sharedCluster()
	if err != nil {
		log.Fatalf("starting a cluster for the examples: %v", err)
	}
	return c.endpoints()
}

// Put a JSON document and read it back.
func ExampleClient_Put() {
	ctx := context.Background()
	c, err := client.New(exampleEndpoints())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	if _, err := c.Put(ctx, "users", "ada", []byte(`{"name":"Ada"}`), client.ContentType("application/json")); err != nil {
		log.Fatal(err)
	}
	res, err := c.Get(ctx, "users", "ada")
	if err != nil {
		log.Fatal(err)
	}
	value, err := res.Value() // ErrSiblings if concurrent writes left several values
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(value), res.Siblings[0].ContentType)

	// The typed helpers marshal and unmarshal JSON.
	type User struct {
		Name  string   `json:"name"`
		Langs []string `json:"langs"`
	}
	if _, err := client.PutJSON(ctx, c, "users", "grace", User{Name: "Grace", Langs: []string{"en"}}); err != nil {
		log.Fatal(err)
	}
	u, _, err := client.GetJSON[User](ctx, c, "users", "grace")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(u.Name, u.Langs)
	// Output:
	// {"name":"Ada"} application/json
	// Grace [en]
}

// Two writers add to a set concurrently, leaving two siblings; Update
// merges them by union. Update is not a transaction: its function must
// merge every sibling it is given, never pick one.
func ExampleClient_Update() {
	ctx := context.Background()
	c, err := client.New(exampleEndpoints())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if err := c.Delete(ctx, "sets", "colors"); err != nil { // start from an empty set
		log.Fatal(err)
	}

	// Both writers read the set (it is absent) and write from what they read:
	// neither write saw the other, so both are kept.
	read, err := c.Get(ctx, "sets", "colors")
	if !errors.Is(err, client.ErrNotFound) {
		log.Fatal(err)
	}
	for _, colors := range [][]string{{"red"}, {"blue"}} {
		if _, err := client.PutJSON(ctx, c, "sets", "colors", colors, client.WithContext(read.Context)); err != nil {
			log.Fatal(err)
		}
	}
	res, err := c.Get(ctx, "sets", "colors")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("siblings:", len(res.Siblings))

	// Add green, merging whatever siblings there are by union.
	addGreen := func(siblings []client.Sibling) ([]byte, error) {
		set := map[string]bool{"green": true}
		for _, s := range siblings {
			var colors []string
			if err := s.Decode(&colors); err != nil {
				return nil, err
			}
			for _, color := range colors {
				set[color] = true
			}
		}
		return json.Marshal(slices.Sorted(maps.Keys(set)))
	}
	if _, err := c.Update(ctx, "sets", "colors", addGreen, client.ContentType("application/json")); err != nil {
		log.Fatal(err)
	}
	colors, _, err := client.GetJSON[[]string](ctx, c, "sets", "colors")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(colors)
	// Output:
	// siblings: 2
	// [blue green red]
}

// A key-aware client (the default) needs one endpoint: it loads the
// cluster's partition table from it, and sends each request to a replica of
// its key. It follows ring changes by itself.
func ExampleNew_keyAware() {
	ctx := context.Background()
	endpoints := exampleEndpoints()
	c, err := client.New(endpoints[:1], client.WithRouting(client.KeyAware))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	fmt.Println("table loaded:", c.RingVersion() != "")
	fmt.Println("replicas of users/ada:", len(c.Replicas("users", "ada")))
	// This write goes straight to one of those replicas, which coordinates
	// it; no node forwards it.
	if _, err := c.Put(ctx, "users", "ada", []byte(`{"name":"Ada"}`), client.ContentType("application/json")); err != nil {
		log.Fatal(err)
	}
	// Output:
	// table loaded: true
	// replicas of users/ada: 3
}
