// Command composeload loads a Compose file the way `docker compose config` does, with
// github.com/compose-spec/compose-go/v2 (the library Docker Compose is built on): the
// Compose JSON schema embedded in that module, interpolation, merging, normalisation and
// the consistency checks (depends_on, networks, volumes, secrets and configs that exist).
// It exits non-zero on any error or warning and prints the resolved model as JSON, which
// scripts/tools/compose_checks.py reads.
//
// Interpolation sees no environment (only the file's own ${VAR:-default}s), so the
// result does not depend on the machine it runs on. All profiles are enabled.
//
// Usage: composeload [-project-name NAME] [-schema-out FILE] COMPOSE_FILE > resolved.json
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/schema"
	"github.com/sirupsen/logrus"
)

// countHook counts the warnings compose-go logs (deprecated or ignored attributes).
type countHook struct{ warnings int }

func (h *countHook) Levels() []logrus.Level {
	return []logrus.Level{logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel, logrus.WarnLevel}
}

func (h *countHook) Fire(*logrus.Entry) error { h.warnings++; return nil }

func main() {
	name := flag.String("project-name", "", "project name when the file sets none")
	schemaOut := flag.String("schema-out", "", "also write the embedded Compose JSON schema to this file")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: composeload [-project-name NAME] [-schema-out FILE] COMPOSE_FILE")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *name, *schemaOut); err != nil {
		fmt.Fprintln(os.Stderr, "composeload:", err)
		os.Exit(1)
	}
}

func run(file, name, schemaOut string) error {
	if schemaOut != "" {
		if err := os.WriteFile(schemaOut, []byte(schema.Schema), 0o644); err != nil {
			return err
		}
	}
	hook := &countHook{}
	logrus.AddHook(hook)
	logrus.SetOutput(os.Stderr)

	abs, err := filepath.Abs(file)
	if err != nil {
		return err
	}
	fns := []cli.ProjectOptionsFn{
		cli.WithWorkingDirectory(filepath.Dir(abs)),
		cli.WithEnv(nil),
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
		// Every profile: services that `up` does not start are checked too.
		cli.WithProfiles([]string{"*"}),
	}
	if name != "" {
		fns = append(fns, cli.WithName(name))
	}
	opts, err := cli.NewProjectOptions([]string{abs}, fns...)
	if err != nil {
		return err
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		return err
	}
	out, err := project.MarshalJSON()
	if err != nil {
		return err
	}
	if _, err := os.Stdout.Write(append(out, '\n')); err != nil {
		return err
	}
	if hook.warnings > 0 {
		return fmt.Errorf("%s: %d warning(s) while loading (see above)", file, hook.warnings)
	}
	return nil
}
