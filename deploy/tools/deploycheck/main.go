// Command deploycheck checks what kubeconform cannot: the Grafana dashboard, the PromQL of
// the dashboard and of the PrometheusRule (parsed with Prometheus' own parser, metric names
// checked against deploy/metrics-contract.txt), and the chart's contract with the connector
// (instance id, args, probes, connector.yaml keys, autoscaling bounds, ...).
//
//	deploycheck dashboard -contract FILE DASHBOARD.json
//	deploycheck manifests -contract FILE -dashboard FILE -expect all|default RENDERED.yaml
//
// It prints one line per check and exits 1 if any failed.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"

	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	contractPath := fs.String("contract", "", "metrics contract (deploy/metrics-contract.txt)")
	dashboardPath := fs.String("dashboard", "", "dashboard JSON the chart must embed unchanged")
	expect := fs.String("expect", "", "all: every optional object rendered; default: none of them")
	verbose := fs.Bool("v", false, "print every check, not only failures")
	_ = fs.Parse(os.Args[2:])
	if fs.NArg() != 1 || *contractPath == "" {
		usage()
	}
	contract, err := readContract(*contractPath)
	if err != nil {
		fatal(err)
	}
	c := &checker{contract: contract, verbose: *verbose}
	switch os.Args[1] {
	case "dashboard":
		c.dashboard(fs.Arg(0))
	case "manifests":
		if *dashboardPath == "" || (*expect != "all" && *expect != "default") {
			usage()
		}
		c.manifests(fs.Arg(0), *dashboardPath, *expect)
	default:
		usage()
	}
	if c.failed > 0 {
		fmt.Printf("  %d check(s) failed, %d passed\n", c.failed, c.passed)
		os.Exit(1)
	}
	fmt.Printf("  all %d checks passed\n", c.passed)
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: deploycheck dashboard -contract FILE DASHBOARD.json\n       deploycheck manifests -contract FILE -dashboard FILE -expect all|default RENDERED.yaml")
	os.Exit(2)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "deploycheck:", err)
	os.Exit(1)
}

type checker struct {
	contract map[string]string // metric name -> type
	verbose  bool
	passed   int
	failed   int
}

// ok counts one check; failures are always printed, passes only with -v.
func (c *checker) ok(cond bool, format string, args ...any) bool {
	if cond {
		c.passed++
		if c.verbose {
			fmt.Println("  ok   ", fmt.Sprintf(format, args...))
		}
	} else {
		c.failed++
		fmt.Println("  FAIL ", fmt.Sprintf(format, args...))
	}
	return cond
}

// note prints what a group of checks covered.
func (c *checker) note(format string, args ...any) { fmt.Println("  -", fmt.Sprintf(format, args...)) }

// readContract reads "name type ..." lines.
func readContract(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			return nil, fmt.Errorf("%s: bad line %q", path, line)
		}
		switch fields[1] {
		case "counter", "gauge", "histogram":
		default:
			return nil, fmt.Errorf("%s: %s: unknown type %q", path, fields[0], fields[1])
		}
		out[fields[0]] = fields[1]
	}
	return out, sc.Err()
}

// series returns the contract metric a series name belongs to.
func (c *checker) series(name string) (string, bool) {
	if _, ok := c.contract[name]; ok {
		return name, c.contract[name] != "histogram"
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base := strings.TrimSuffix(name, suffix)
		if base != name && c.contract[base] == "histogram" {
			return base, true
		}
	}
	return "", false
}

var grafanaRange = regexp.MustCompile(`\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}`)

// promql parses an expression (Grafana range variables replaced) and returns the contract
// metrics it uses; it reports a failure for a syntax error or a metric outside the contract.
func (c *checker) promql(what, expr string) []string {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(grafanaRange.ReplaceAllString(expr, "5m"))
	if !c.ok(err == nil, "%s: PromQL parses", what) {
		fmt.Printf("         %v\n         %s\n", err, expr)
		return nil
	}
	var used []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, isSel := n.(*parser.VectorSelector)
		if !isSel {
			return nil
		}
		name := vs.Name
		if name == "" {
			for _, m := range vs.LabelMatchers {
				if m.Name == "__name__" {
					name = m.Value
				}
			}
		}
		base, ok := c.series(name)
		c.ok(ok, "%s: metric %s is in the contract", what, name)
		if ok {
			used = append(used, base)
		}
		return nil
	})
	c.ok(len(used) > 0, "%s: selects at least one connector metric", what)
	return used
}

// ---- dashboard --------------------------------------------------------------------------

type panel struct {
	ID         int              `json:"id"`
	Type       string           `json:"type"`
	Title      string           `json:"title"`
	GridPos    *json.RawMessage `json:"gridPos"`
	Datasource map[string]any   `json:"datasource"`
	Targets    []struct {
		Expr       string         `json:"expr"`
		RefID      string         `json:"refId"`
		Datasource map[string]any `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

func (c *checker) dashboard(path string) {
	fmt.Println("dashboard", path)
	raw, err := os.ReadFile(path)
	if err != nil {
		fatal(err)
	}
	var d struct {
		Title         string  `json:"title"`
		UID           string  `json:"uid"`
		SchemaVersion int     `json:"schemaVersion"`
		Panels        []panel `json:"panels"`
		Templating    struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if !c.ok(json.Unmarshal(raw, &d) == nil, "JSON parses") {
		return
	}
	c.ok(d.Title != "" && d.UID != "" && d.SchemaVersion > 0, "title %q, uid %q, schemaVersion %d set", d.Title, d.UID, d.SchemaVersion)

	vars := map[string]bool{}
	metricName := regexp.MustCompile(`\bconnector_[a-z_]+\b`)
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if q, isString := v.Query.(string); isString && v.Type == "query" {
			names := metricName.FindAllString(q, -1)
			c.ok(len(names) > 0, "variable %s: queries a connector metric", v.Name)
			for _, n := range names {
				_, known := c.series(n)
				c.ok(known, "variable %s: metric %s is in the contract", v.Name, n)
			}
		}
	}
	for _, v := range []string{"datasource", "namespace", "job", "instance"} {
		c.ok(vars[v], "has a %s variable", v)
	}

	ids := map[int]string{}
	used := map[string]bool{}
	var visit func(ps []panel)
	visit = func(ps []panel) {
		for _, p := range ps {
			if prev, dup := ids[p.ID]; dup || p.ID == 0 {
				c.ok(false, "panel %q: id %d unique and non-zero (also %q)", p.Title, p.ID, prev)
			}
			ids[p.ID] = p.Title
			if p.Type == "row" {
				visit(p.Panels)
				continue
			}
			name := fmt.Sprintf("panel %d %q", p.ID, p.Title)
			c.ok(p.Title != "" && p.GridPos != nil, "%s: has a title and a gridPos", name)
			c.ok(p.Datasource["uid"] == "${datasource}", "%s: uses the datasource variable", name)
			if !c.ok(len(p.Targets) > 0, "%s: has %d target(s)", name, len(p.Targets)) {
				continue
			}
			refs := map[string]bool{}
			var metrics []string
			for _, t := range p.Targets {
				tname := fmt.Sprintf("%s target %s", name, t.RefID)
				c.ok(t.RefID != "" && !refs[t.RefID], "%s: refId set and unique", tname)
				refs[t.RefID] = true
				if !c.ok(strings.TrimSpace(t.Expr) != "", "%s: has an expression", tname) {
					continue
				}
				for _, v := range []string{"namespace", "job", "instance"} {
					c.ok(strings.Contains(t.Expr, "$"+v), "%s: filters by $%s", tname, v)
				}
				for _, m := range c.promql(tname, t.Expr) {
					used[m] = true
					metrics = append(metrics, m)
				}
			}
			c.note("%s: %d target(s) on %s", name, len(p.Targets), strings.Join(uniq(metrics), ", "))
		}
	}
	visit(d.Panels)
	for _, m := range sortedKeys(c.contract) {
		c.ok(used[m], "contract metric %s has a panel", m)
	}
	c.note("all %d contract metrics have a panel; every expression parses as PromQL and uses only contract metrics", len(c.contract))
}

// ---- rendered manifests -----------------------------------------------------------------

type obj = map[string]any

func get(o any, path ...string) any {
	for _, p := range path {
		m, ok := o.(map[string]any)
		if !ok {
			return nil
		}
		o = m[p]
	}
	return o
}

func gets(o any, path ...string) string { s, _ := get(o, path...).(string); return s }

func list(o any, path ...string) []any { l, _ := get(o, path...).([]any); return l }

func num(o any, path ...string) (float64, bool) {
	f, ok := get(o, path...).(float64)
	return f, ok
}

// The keys the connector accepts in connector.yaml (src/runtime/config.rs, RawConfig:
// deny_unknown_fields). instance_id is deliberately missing: the chart sets it per pod.
var configKeys = map[string]bool{
	"bootstrap_servers": true, "application_id": true, "processing_guarantee": true,
	"commit_interval": true, "max_delay": true, "merge_max_wait": true, "merge_fetch_wait": true,
	"transaction_timeout": true, "restore_log_interval": true, "group_protocol": true,
	"max_future_skew": true, "retry_budget": true,
	"static_membership": true, "partitions": true, "replication_factor": true,
	"topics": true, "encoding": true, "encodings": true, "kafka": true,
}

var topicKeys = map[string]bool{
	"interactions": true, "user_events": true, "campaigns": true, "send_commands": true,
	"changelog": true, "decisions": true, "dlq": true, "shadow": true,
}

var optionalKinds = []string{"ScaledObject", "PrometheusRule", "ServiceMonitor", "ConfigMap/dashboard"}

var wantAlerts = []string{
	"CampaignConnectorConsumerLagGrowing", "CampaignConnectorDeadLetters",
	"CampaignConnectorRestoreStuck", "CampaignConnectorTransactionAborts",
	"CampaignConnectorOverdueTimers",
}

func (c *checker) manifests(path, dashboardPath, expect string) {
	fmt.Println("manifests", path, "(expect "+expect+")")
	raw, err := os.ReadFile(path)
	if err != nil {
		fatal(err)
	}
	byKind := map[string][]obj{}
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(raw), -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var o obj
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			c.ok(false, "document parses: %v", err)
			continue
		}
		if o == nil {
			continue
		}
		kind := gets(o, "kind")
		if kind == "ConfigMap" && get(o, "data", "campaign-connector.json") != nil {
			kind = "ConfigMap/dashboard"
		}
		byKind[kind] = append(byKind[kind], o)
	}
	one := func(kind string) obj {
		if len(byKind[kind]) == 1 {
			return byKind[kind][0]
		}
		return nil
	}
	var kinds []string
	for _, k := range sortedKeys(byKind) {
		kinds = append(kinds, fmt.Sprintf("%s x%d", k, len(byKind[k])))
	}
	c.note("rendered: %s", strings.Join(kinds, ", "))
	for _, k := range optionalKinds {
		if expect == "all" {
			c.ok(len(byKind[k]) == 1, "one %s rendered", k)
		} else {
			c.ok(len(byKind[k]) == 0, "no %s rendered by default", k)
		}
	}

	sts := one("StatefulSet")
	if !c.ok(sts != nil, "one StatefulSet rendered") {
		return
	}
	podLabels, _ := get(sts, "spec", "template", "metadata", "labels").(map[string]any)
	selects := func(sel any) bool {
		m, ok := sel.(map[string]any)
		if !ok || len(m) == 0 {
			return false
		}
		for k, v := range m {
			if podLabels[k] != v {
				return false
			}
		}
		return true
	}
	c.ok(selects(get(sts, "spec", "selector", "matchLabels")), "StatefulSet selector matches its pod labels")
	grace, _ := num(sts, "spec", "template", "spec", "terminationGracePeriodSeconds")
	c.ok(grace >= 60, "terminationGracePeriodSeconds %v >= 60", grace)
	containers := list(sts, "spec", "template", "spec", "containers")
	if !c.ok(len(containers) == 1, "one container") {
		return
	}
	ctr := containers[0]
	c.ok(reflect.DeepEqual(get(ctr, "args"), []any{"run", "--config", "/etc/connector/connector.yaml"}),
		"args are run --config /etc/connector/connector.yaml")
	env := map[string]any{}
	for _, e := range list(ctr, "env") {
		env[gets(e, "name")] = e
	}
	c.ok(gets(env["CONNECTOR_INSTANCE_ID"], "valueFrom", "fieldRef", "fieldPath") == "metadata.name",
		"CONNECTOR_INSTANCE_ID comes from the pod name (downward API)")
	var port float64
	for _, p := range list(ctr, "ports") {
		if gets(p, "name") == "http" {
			port, _ = num(p, "containerPort")
		}
	}
	c.ok(port > 0, "container port named http (%v)", port)
	c.ok(gets(env["CONNECTOR_HTTP_LISTEN"], "value") == fmt.Sprintf("0.0.0.0:%d", int(port)),
		"CONNECTOR_HTTP_LISTEN listens on 0.0.0.0 at the http port")
	adminSecret := gets(env["CONNECTOR_ADMIN_TOKEN"], "valueFrom", "secretKeyRef", "name")
	c.ok(adminSecret != "", "CONNECTOR_ADMIN_TOKEN comes from a Secret")
	if s := byName(byKind["Secret"], adminSecret); s != nil {
		key := gets(env["CONNECTOR_ADMIN_TOKEN"], "valueFrom", "secretKeyRef", "key")
		c.ok(gets(s, "data", key) != "", "Secret %s has key %s", adminSecret, key)
	}
	for _, p := range []struct{ probe, path string }{{"livenessProbe", "/healthz"}, {"readinessProbe", "/readyz"}} {
		c.ok(gets(ctr, p.probe, "httpGet", "path") == p.path && get(ctr, p.probe, "httpGet", "port") == "http",
			"%s is GET %s on port http", p.probe, p.path)
	}
	for k := range env {
		if strings.HasPrefix(k, "CONNECTOR_") {
			c.ok(regexp.MustCompile(`^CONNECTOR_[A-Z0-9_]+$`).MatchString(k), "env %s is a valid CONNECTOR_ name", k)
		}
	}

	c.note("StatefulSet %s: instance id from the pod name, args, port http %d, HTTP listen, admin token from Secret %s, probes /healthz and /readyz, grace %vs",
		gets(sts, "metadata", "name"), int(port), adminSecret, grace)

	// connector.yaml
	var cmName string
	for _, v := range list(sts, "spec", "template", "spec", "volumes") {
		if gets(v, "name") == "config" {
			cmName = gets(v, "configMap", "name")
		}
	}
	cm := byName(byKind["ConfigMap"], cmName)
	var cfg obj
	if c.ok(cm != nil, "config volume refers to rendered ConfigMap %q", cmName) {
		text := gets(cm, "data", "connector.yaml")
		c.ok(yaml.Unmarshal([]byte(text), &cfg) == nil && cfg != nil, "connector.yaml parses")
		for k := range cfg {
			c.ok(configKeys[k], "connector.yaml key %s is a connector config key", k)
		}
		for k := range asMap(cfg["topics"]) {
			c.ok(topicKeys[k], "connector.yaml key topics.%s is a connector config key", k)
		}
		for k, v := range asMap(cfg["kafka"]) {
			_, isString := v.(string)
			c.ok(isString, "connector.yaml kafka.%s is a string", k)
		}
		c.note("connector.yaml (ConfigMap %s): keys %s", cmName, strings.Join(sortedKeys(cfg), ", "))
	}

	// Services and PDB.
	headless := byName(byKind["Service"], gets(sts, "spec", "serviceName"))
	if c.ok(headless != nil, "serviceName %q is a rendered Service", gets(sts, "spec", "serviceName")) {
		c.ok(gets(headless, "spec", "clusterIP") == "None", "Service %s is headless", gets(headless, "metadata", "name"))
		c.ok(selects(get(headless, "spec", "selector")), "headless Service selects the pods")
	}
	var metricsSvc obj
	for _, s := range byKind["Service"] {
		if gets(s, "spec", "clusterIP") != "None" {
			metricsSvc = s
		}
	}
	if c.ok(metricsSvc != nil, "a metrics Service is rendered") {
		ports := list(metricsSvc, "spec", "ports")
		c.ok(len(ports) == 1 && gets(ports[0], "name") == "http" && gets(ports[0], "targetPort") == "http",
			"metrics Service exposes port http")
		c.ok(selects(get(metricsSvc, "spec", "selector")), "metrics Service selects the pods")
	}
	if pdb := one("PodDisruptionBudget"); c.ok(pdb != nil, "one PodDisruptionBudget rendered") {
		mu, _ := num(pdb, "spec", "maxUnavailable")
		c.ok(mu == 1, "PodDisruptionBudget maxUnavailable is 1")
		c.ok(selects(get(pdb, "spec", "selector", "matchLabels")), "PodDisruptionBudget selects the pods")
	}
	if sa := gets(sts, "spec", "template", "spec", "serviceAccountName"); len(byKind["ServiceAccount"]) > 0 {
		c.ok(byName(byKind["ServiceAccount"], sa) != nil, "serviceAccountName %s is rendered", sa)
	}
	c.note("headless Service, metrics Service (port http) and PodDisruptionBudget (maxUnavailable 1) select the pods")

	// Autoscaling.
	if so := one("ScaledObject"); so != nil {
		c.ok(get(sts, "spec", "replicas") == nil, "StatefulSet leaves replicas to the autoscaler")
		c.ok(gets(so, "spec", "scaleTargetRef", "kind") == "StatefulSet" &&
			gets(so, "spec", "scaleTargetRef", "name") == gets(sts, "metadata", "name"),
			"ScaledObject targets the StatefulSet")
		minR, _ := num(so, "spec", "minReplicaCount")
		maxR, _ := num(so, "spec", "maxReplicaCount")
		parts, _ := cfg["partitions"].(float64)
		c.ok(minR >= 1, "minReplicaCount %v >= 1 (timers need a running instance)", minR)
		c.ok(maxR >= minR && parts > 0 && maxR <= parts, "maxReplicaCount %v <= partitions %v", maxR, parts)
		topics := map[string]bool{}
		for _, t := range list(so, "spec", "triggers") {
			if gets(t, "type") != "kafka" {
				continue
			}
			c.ok(gets(t, "metadata", "consumerGroup") == gets(cfg, "application_id"),
				"kafka trigger %s: consumerGroup is application_id %q", gets(t, "name"), gets(cfg, "application_id"))
			c.ok(gets(t, "metadata", "lagThreshold") != "", "kafka trigger %s: lagThreshold set", gets(t, "name"))
			topics[gets(t, "metadata", "topic")] = true
		}
		for _, role := range []string{"interactions", "user_events"} {
			topic := gets(cfg, "topics", role)
			if topic == "" {
				topic = map[string]string{"interactions": "campaign-interactions", "user_events": "user-events"}[role]
			}
			c.ok(topics[topic], "a kafka trigger watches topics.%s (%s)", role, topic)
		}
		c.note("ScaledObject: %v..%v instances (partitions %v), kafka triggers on %s, consumer group %s",
			minR, maxR, parts, strings.Join(sortedKeys(topics), ", "), gets(cfg, "application_id"))
	} else {
		c.ok(get(sts, "spec", "replicas") != nil, "StatefulSet sets replicas (no autoscaler)")
	}

	// Alerts.
	if pr := one("PrometheusRule"); pr != nil {
		seen := map[string]bool{}
		for _, g := range list(pr, "spec", "groups") {
			for _, r := range list(g, "rules") {
				name := gets(r, "alert")
				seen[name] = true
				c.promql("alert "+name, gets(r, "expr"))
				c.ok(gets(r, "labels", "severity") != "", "alert %s has a severity", name)
			}
		}
		for _, a := range wantAlerts {
			c.ok(seen[a], "alert %s is rendered", a)
		}
		c.note("PrometheusRule: alerts %s; expressions parse as PromQL and use only contract metrics", strings.Join(sortedKeys(seen), ", "))
	}

	// ServiceMonitor.
	if sm := one("ServiceMonitor"); sm != nil && metricsSvc != nil {
		svcLabels := asMap(get(metricsSvc, "metadata", "labels"))
		match := true
		for k, v := range asMap(get(sm, "spec", "selector", "matchLabels")) {
			match = match && svcLabels[k] == v
		}
		if headless != nil {
			hl := asMap(get(headless, "metadata", "labels"))
			only := false
			for k, v := range asMap(get(sm, "spec", "selector", "matchLabels")) {
				only = only || hl[k] != v
			}
			c.ok(only, "ServiceMonitor does not select the headless Service")
		}
		eps := list(sm, "spec", "endpoints")
		c.ok(match && len(eps) == 1 && gets(eps[0], "port") == "http" && gets(eps[0], "path") == "/metrics",
			"ServiceMonitor scrapes the metrics Service's http port at /metrics")
		c.note("ServiceMonitor: metrics Service, port http, /metrics")
	}

	// Dashboard ConfigMap.
	if dcm := one("ConfigMap/dashboard"); dcm != nil {
		want, err := os.ReadFile(dashboardPath)
		if err != nil {
			fatal(err)
		}
		got := gets(dcm, "data", "campaign-connector.json")
		c.ok(strings.TrimSpace(got) == strings.TrimSpace(string(want)), "dashboard ConfigMap embeds %s unchanged", dashboardPath)
		c.ok(gets(dcm, "metadata", "labels", "grafana_dashboard") == "1", "dashboard ConfigMap is labelled grafana_dashboard: \"1\"")
		c.note("dashboard ConfigMap %s: labelled grafana_dashboard=1, same JSON as %s", gets(dcm, "metadata", "name"), dashboardPath)
	}
}

func byName(objs []obj, name string) obj {
	for _, o := range objs {
		if gets(o, "metadata", "name") == name {
			return o
		}
	}
	return nil
}

func uniq(xs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

func asMap(v any) map[string]any { m, _ := v.(map[string]any); return m }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
