// Package config is the whole of tandem.yaml: the vocabulary and shared
// settings (schemas.Config) and every component's own section, each
// decoded and validated by the package that owns it. Loading goes through
// here so one load reports every problem of every section at once, with
// its line. Components never import this package: cmd/tandem (and tests
// that need a whole deployment) hand each its own Config and the
// vocabulary.
package config

import (
	"fmt"
	"os"

	"github.com/tandem-analytics/tandem/batch"
	"github.com/tandem-analytics/tandem/batch/archive"
	"github.com/tandem-analytics/tandem/ingest"
	"github.com/tandem-analytics/tandem/schemas"
	"github.com/tandem-analytics/tandem/serving"
	"github.com/tandem-analytics/tandem/speed"
	"github.com/tandem-analytics/tandem/status"
)

// Config is tandem.yaml. The embedded schemas.Config holds the vocabulary
// (streams, views, chunk_size, ingest.max_future_skew), the connections
// (kafka, clickhouse, s3) and auth; the other fields are the components'
// sections, owned by their packages.
type Config struct {
	*schemas.Config
	Ingest  ingest.Config
	Serve   serving.Config
	Speed   speed.Config
	Archive archive.Config
	Batch   batch.Config
	Status  status.Config
}

// Default returns the configuration used for every setting a file leaves
// out (it has no streams or views).
func Default() *Config {
	sc := schemas.Default()
	return &Config{Config: &sc, Ingest: ingest.DefaultConfig(), Serve: serving.DefaultConfig(), Speed: speed.DefaultConfig(),
		Archive: archive.DefaultConfig(), Batch: batch.DefaultConfig(), Status: status.DefaultConfig()}
}

// LoadFile reads, expands and validates a configuration file.
func LoadFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data, os.LookupEnv)
}

// section is what config needs of a component's Config.
type section interface {
	Validate(*schemas.Problems)
}

// Parse expands environment references in data, decodes it over Default()
// and validates it. Like a single YAML decode, it reports every decoding
// error of the file (unknown keys, wrong types) if there is any, and
// otherwise every validation error of every section; errors are
// schemas.ConfigErrors in line order. name is used in error messages.
func Parse(name string, data []byte, lookup func(string) (string, bool)) (*Config, error) {
	sc, errs := schemas.Read(name, data, lookup)
	if sc == nil {
		return nil, errs
	}
	c := Default()
	c.Config = sc
	for _, d := range []struct {
		s    schemas.Section
		into any
	}{
		{sc.Sections.Ingest, &c.Ingest}, {sc.Sections.Serve, &c.Serve}, {sc.Sections.Speed, &c.Speed},
		{sc.Sections.Archive, &c.Archive}, {sc.Sections.Batch, &c.Batch}, {sc.Sections.Status, &c.Status},
	} {
		errs = append(errs, d.s.Decode(d.into)...)
	}
	if len(errs) > 0 {
		errs.Sort()
		return nil, errs
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate checks the vocabulary and every section and returns all that is
// wrong (schemas.ConfigErrors, in line order), or nil. It also builds the
// vocabulary's lookup indexes, so a Config changed in code (tests) is
// validated again before use.
func (c *Config) Validate() error {
	errs := c.Config.Validate()
	p := c.Problems()
	for _, s := range []section{c.Ingest, c.Serve, c.Speed, c.Archive, c.Batch, c.Status} {
		s.Validate(p)
	}
	errs = append(errs, p.Errors()...)
	if len(errs) == 0 {
		return nil
	}
	errs.Sort()
	return errs
}

// Deployment is what the health report needs from the other sections.
func (c *Config) Deployment() status.Deployment {
	return status.Deployment{
		Endpoints: map[string]status.Endpoint{
			"ingest":  {Listen: c.Ingest.Listen, TLS: c.Ingest.TLS},
			"speed":   {Listen: c.Speed.Listen},
			"archive": {Listen: c.Archive.Listen},
			"serve":   {Listen: c.Serve.Listen, TLS: c.Serve.TLS},
		},
		BatchEvery:        c.Batch.Every.D(),
		ArchiveMaxFileAge: c.Archive.MaxFileAge.D(),
	}
}
