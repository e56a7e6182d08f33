// Command genschemas writes the JSON schemas that deploy/validate.sh hands to kubeconform.
//
// It works offline on two kinds of input, both taken from Go modules by gen-schemas.sh:
//
//   - the Kubernetes OpenAPI v2 document (k8s.io/kubernetes api/openapi-spec/swagger.json):
//     one standalone (all $refs inlined), strict schema per requested kind, named the way
//     kubeconform looks it up: kubernetes/v<version>-standalone-strict/<kind>[-<group>]-<version>.json;
//   - CustomResourceDefinition YAML files: one strict schema per served version, named
//     crds/<group>/<kind>_<version>.json.
//
// The conversion follows kubeconform's openapi2jsonschema.py: objects that list properties
// get "additionalProperties": false (so unknown fields are errors), int-or-string becomes
// oneOf string|integer. Beyond it: Quantity accepts numbers as the API server does, optional
// fields accept null (the API server treats null as unset), objects marked
// x-kubernetes-preserve-unknown-fields stay open, apiVersion and kind are pinned with enums,
// a CRD's metadata is validated as ObjectMeta, and descriptions and x-kubernetes-* hints
// are dropped (they do not validate anything and would make the vendored files much larger).
// CEL rules (x-kubernetes-validations) cannot be checked by a JSON schema and are dropped.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

const (
	refPrefix  = "#/definitions/"
	objectMeta = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	swagger := flag.String("swagger", "", "Kubernetes OpenAPI v2 document (swagger.json)")
	version := flag.String("k8s-version", "", "Kubernetes version the document belongs to, e.g. 1.35.4")
	out := flag.String("out", "", "output directory")
	var kinds, crds listFlag
	flag.Var(&kinds, "kind", "built-in kind as apiVersion/Kind, e.g. apps/v1/StatefulSet or v1/Service (repeatable)")
	flag.Var(&crds, "crd", "CustomResourceDefinition YAML file (repeatable)")
	flag.Parse()
	if *swagger == "" || *version == "" || *out == "" || len(kinds) == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*swagger, *version, *out, kinds, crds); err != nil {
		fmt.Fprintln(os.Stderr, "genschemas:", err)
		os.Exit(1)
	}
}

func run(swaggerPath, version, out string, kinds, crds []string) error {
	raw, err := os.ReadFile(swaggerPath)
	if err != nil {
		return err
	}
	var doc struct {
		Definitions map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("%s: %w", swaggerPath, err)
	}
	c := &converter{defs: doc.Definitions}

	// Index the definitions by group/version/kind.
	byGVK := map[string]string{}
	for name, d := range doc.Definitions {
		m, _ := d.(map[string]any)
		gvks, _ := m["x-kubernetes-group-version-kind"].([]any)
		for _, g := range gvks {
			gm, _ := g.(map[string]any)
			byGVK[apiVersion(str(gm["group"]), str(gm["version"]))+"/"+str(gm["kind"])] = name
		}
	}

	k8sDir := filepath.Join(out, "kubernetes", "v"+version+"-standalone-strict")
	for _, k := range kinds {
		name, ok := byGVK[k]
		if !ok {
			return fmt.Errorf("kind %s not found in %s", k, swaggerPath)
		}
		i := strings.LastIndex(k, "/")
		av, kind := k[:i], k[i+1:]
		s, err := c.root(c.defs[name], name, av, kind)
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		if err := write(filepath.Join(k8sDir, strings.ToLower(kind)+kindSuffix(av)+".json"), s); err != nil {
			return err
		}
	}

	meta, err := c.convert(c.defs[objectMeta])
	if err != nil {
		return err
	}
	for _, f := range crds {
		if err := c.crd(f, meta, filepath.Join(out, "crds")); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
	}
	return nil
}

// kindSuffix is the file-name suffix kubeconform derives from an apiVersion
// (pkg/registry: "-" + first label of the group, then "-" + version; "-v1" for the core group).
func kindSuffix(av string) string {
	parts := strings.Split(av, "/")
	s := "-" + strings.ToLower(strings.Split(parts[0], ".")[0])
	if len(parts) > 1 {
		s += "-" + strings.ToLower(parts[1])
	}
	return s
}

func apiVersion(group, version string) string {
	if group == "" {
		return version
	}
	return group + "/" + version
}

func str(v any) string { s, _ := v.(string); return s }

type converter struct {
	defs  map[string]any
	stack []string
}

// root converts a top-level kind and pins apiVersion and kind.
func (c *converter) root(def any, name, av, kind string) (map[string]any, error) {
	c.stack = append(c.stack[:0], name)
	s, err := c.convert(def)
	if err != nil {
		return nil, err
	}
	pin(s, av, kind)
	return s, nil
}

func pin(s map[string]any, av, kind string) {
	props, _ := s["properties"].(map[string]any)
	if props == nil {
		props = map[string]any{}
		s["properties"] = props
	}
	props["apiVersion"] = map[string]any{"type": "string", "enum": []any{av}}
	props["kind"] = map[string]any{"type": "string", "enum": []any{kind}}
	s["required"] = union(s["required"], "apiVersion", "kind")
	s["additionalProperties"] = false
}

func union(v any, add ...string) []any {
	seen := map[string]bool{}
	var out []any
	list, _ := v.([]any)
	for _, x := range list {
		if s := str(x); !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, s := range add {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

var intOrString = func() map[string]any {
	return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
}

// convert returns the JSON-schema form of one OpenAPI schema node.
func (c *converter) convert(node any) (map[string]any, error) {
	m, ok := node.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("schema node is %T, not an object", node)
	}
	if ref, ok := m["$ref"].(string); ok {
		name := strings.TrimPrefix(ref, refPrefix)
		switch name {
		case "io.k8s.apimachinery.pkg.util.intstr.IntOrString":
			return intOrString(), nil
		case "io.k8s.apimachinery.pkg.api.resource.Quantity":
			// The API server accepts `cpu: 1` as well as `cpu: "1"`.
			return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "number"}}}, nil
		}
		for _, s := range c.stack {
			if s == name { // recursive type (JSONSchemaProps): accept anything below this point
				return map[string]any{}, nil
			}
		}
		def, ok := c.defs[name]
		if !ok {
			return nil, fmt.Errorf("unresolved $ref %s", ref)
		}
		c.stack = append(c.stack, name)
		defer func() { c.stack = c.stack[:len(c.stack)-1] }()
		return c.convert(def)
	}
	if m["format"] == "int-or-string" || m["x-kubernetes-int-or-string"] == true {
		return intOrString(), nil
	}
	preserve := m["x-kubernetes-preserve-unknown-fields"] == true
	out := map[string]any{}
	for k, v := range m {
		switch {
		case k == "description", k == "nullable", strings.HasPrefix(k, "x-kubernetes-"):
			// dropped; nullable is applied below
		case k == "properties":
			props, _ := v.(map[string]any)
			required := map[string]bool{}
			if r, ok := m["required"].([]any); ok {
				for _, x := range r {
					required[str(x)] = true
				}
			}
			conv := map[string]any{}
			for name, p := range props {
				s, err := c.convert(p)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", name, err)
				}
				if !required[name] {
					allowNull(s)
				}
				conv[name] = s
			}
			out[k] = conv
		case k == "items" || k == "not":
			if _, isList := v.([]any); isList {
				return nil, fmt.Errorf("tuple %s not supported", k)
			}
			s, err := c.convert(v)
			if err != nil {
				return nil, err
			}
			out[k] = s
		case k == "additionalProperties":
			if b, isBool := v.(bool); isBool {
				out[k] = b
				continue
			}
			s, err := c.convert(v)
			if err != nil {
				return nil, err
			}
			out[k] = s
		case k == "allOf" || k == "anyOf" || k == "oneOf":
			list, _ := v.([]any)
			var conv []any
			for _, x := range list {
				s, err := c.convert(x)
				if err != nil {
					return nil, err
				}
				conv = append(conv, s)
			}
			out[k] = conv
		default:
			out[k] = v
		}
	}
	if m["nullable"] == true {
		allowNull(out)
	}
	if _, hasProps := out["properties"]; hasProps && !preserve {
		if _, set := out["additionalProperties"]; !set {
			out["additionalProperties"] = false
		}
	}
	return out, nil
}

// allowNull lets a schema accept null as well.
func allowNull(s map[string]any) {
	switch t := s["type"].(type) {
	case string:
		if t != "null" {
			s["type"] = []any{t, "null"}
		}
	case []any:
		for _, x := range t {
			if x == "null" {
				return
			}
		}
		s["type"] = append(t, "null")
	case nil:
		if one, ok := s["oneOf"].([]any); ok {
			s["oneOf"] = append(one, map[string]any{"type": "null"})
		}
	}
}

// crd writes one schema per served version of a CustomResourceDefinition.
func (c *converter) crd(path string, meta map[string]any, out string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var crd struct {
		Kind string `json:"kind"`
		Spec struct {
			Group string `json:"group"`
			Names struct {
				Kind string `json:"kind"`
			} `json:"names"`
			Versions []struct {
				Name   string `json:"name"`
				Served bool   `json:"served"`
				Schema struct {
					OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &crd); err != nil {
		return err
	}
	if crd.Kind != "CustomResourceDefinition" {
		return fmt.Errorf("kind is %q, not CustomResourceDefinition", crd.Kind)
	}
	n := 0
	for _, v := range crd.Spec.Versions {
		if !v.Served || v.Schema.OpenAPIV3Schema == nil {
			continue
		}
		c.stack = c.stack[:0]
		s, err := c.convert(v.Schema.OpenAPIV3Schema)
		if err != nil {
			return fmt.Errorf("version %s: %w", v.Name, err)
		}
		props, _ := s["properties"].(map[string]any)
		if props == nil {
			props = map[string]any{}
			s["properties"] = props
		}
		m := clone(meta)
		allowNull(m)
		props["metadata"] = m
		pin(s, crd.Spec.Group+"/"+v.Name, crd.Spec.Names.Kind)
		file := filepath.Join(out, crd.Spec.Group, strings.ToLower(crd.Spec.Names.Kind)+"_"+v.Name+".json")
		if err := write(file, s); err != nil {
			return err
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("no served version with a schema")
	}
	return nil
}

func clone(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return out
}

func write(path string, s map[string]any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", " ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Println("wrote", path)
	return nil
}
