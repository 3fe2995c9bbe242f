// Command metadata-client asks the metadata server what a Go app on Cloud
// Run asks it, through Google's own client (cloud.google.com/go/compute/metadata),
// and prints the answers as one JSON object. GCE_METADATA_HOST points it at
// the emulator. It exits 1 if any call failed, naming the call.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"cloud.google.com/go/compute/metadata"
)

func main() {
	answers := map[string]interface{}{"OnGCE": metadata.OnGCE()}
	failed := false
	for _, call := range []struct {
		name string
		get  func() (string, error)
	}{
		{"ProjectID", metadata.ProjectID},
		{"NumericProjectID", metadata.NumericProjectID},
		{"Zone", metadata.Zone},
		{"InstanceID", metadata.InstanceID},
		{"Email", func() (string, error) { return metadata.Email("") }},
		{`Get("instance/region")`, func() (string, error) { return metadata.Get("instance/region") }},
		{`Get("instance/zone")`, func() (string, error) { return metadata.Get("instance/zone") }},
	} {
		value, err := call.get()
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", call.name, err)
			failed = true
			continue
		}
		answers[call.name] = value
	}
	out := json.NewEncoder(os.Stdout)
	out.SetIndent("", "  ")
	if err := out.Encode(answers); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if failed {
		os.Exit(1)
	}
}
