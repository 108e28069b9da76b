package schemas

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Sections are the parts of tandem.yaml that belong to one component each.
// schemas keeps them as read, with their lines; the owning package decodes
// its own (Section.Decode) over its defaults and validates it with the
// Problems of the file (docs/architecture.md, "Configuration: each
// component owns its section").
type Sections struct {
	Ingest  Section `yaml:"ingest"`
	Serve   Section `yaml:"serve"`
	Speed   Section `yaml:"speed"`
	Archive Section `yaml:"archive"`
	Batch   Section `yaml:"batch"`
	Status  Section `yaml:"status"`
}

// Section is one component's part of the file, not yet decoded.
type Section struct {
	file string
	node *yaml.Node
}

// UnmarshalYAML keeps the node for the owning package to decode.
func (s *Section) UnmarshalYAML(n *yaml.Node) error {
	s.node = n
	return nil
}

// SectionConfig is what a component's configuration type provides:
// validation that adds its problems to p.
type SectionConfig interface {
	Validate(p *Problems)
}

// DecodeSection is every component's ConfigFrom: section (one of cfg's
// Sections) decoded over defaults, then validated; decoding errors (unknown
// keys, wrong types) are returned before validation runs.
func DecodeSection[C SectionConfig](cfg *Config, section Section, defaults C) (C, error) {
	c := defaults
	if errs := section.Decode(&c); len(errs) > 0 {
		return c, errs
	}
	p := cfg.Problems()
	c.Validate(p)
	return c, p.Err()
}

// Decode decodes the section over into (a pointer to the owner's Config,
// holding its defaults), as strictly as the rest of the file: a key into
// does not declare is refused, every error names its line. A section the
// file leaves out leaves into as it is.
func (s Section) Decode(into any) ConfigErrors {
	if s.node == nil {
		return nil
	}
	errs := unknownKeys(s.file, s.node, reflect.TypeOf(into).Elem())
	if err := s.node.Decode(into); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			for _, msg := range te.Errors {
				errs = append(errs, yamlError(s.file, errors.New(msg)))
			}
		} else {
			errs = append(errs, yamlError(s.file, err))
		}
	}
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
	return errs
}

// without returns the section with key taken out, and the key's value node
// (nil when absent): for a key the vocabulary owns inside a component's
// section.
func (s Section) without(key string) (Section, *yaml.Node) {
	n := s.node
	if n == nil || n.Kind != yaml.MappingNode {
		return s, nil
	}
	var value *yaml.Node
	rest := *n
	rest.Content = nil
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			value = n.Content[i+1]
			continue
		}
		rest.Content = append(rest.Content, n.Content[i], n.Content[i+1])
	}
	s.node = &rest
	return s, value
}

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

// unknownKeys reports every mapping key under n that t does not declare,
// the way yaml.v3's KnownFields does for a whole document (Node.Decode has
// no such option).
func unknownKeys(file string, n *yaml.Node, t reflect.Type) ConfigErrors {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil
	}
	var errs ConfigErrors
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := map[string]reflect.Type{}
		yamlFields(t, fields)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			ft, ok := fields[k.Value]
			if !ok {
				errs = append(errs, ConfigError{File: file, Line: k.Line, Msg: fmt.Sprintf("field %q not recognised", k.Value)})
				continue
			}
			errs = append(errs, unknownKeys(file, n.Content[i+1], ft)...)
		}
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 1; i < len(n.Content); i += 2 {
			errs = append(errs, unknownKeys(file, n.Content[i], t.Elem())...)
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for _, c := range n.Content {
			errs = append(errs, unknownKeys(file, c, t.Elem())...)
		}
	}
	return errs
}

// yamlFields lists the keys of a struct as yaml.v3 reads them: the yaml
// tag's name (or the lower-cased field name), inline structs flattened,
// "-" and unexported fields left out.
func yamlFields(t reflect.Type, into map[string]reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(","+opts+",", ",inline,") {
			yamlFields(f.Type, into)
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		into[name] = f.Type
	}
}

// Problems gathers the validation errors of one file, each with the line
// of the key it names. Every component's Validate adds to the same
// Problems, so one load reports everything wrong with the file at once.
type Problems struct {
	l    *locator
	errs ConfigErrors
}

// Problems returns an empty collector over the file c was read from (for
// a configuration built in code, errors have no line).
func (c *Config) Problems() *Problems { return &Problems{l: c.loc} }

// Add records a problem at path: keys (string) and sequence indexes (int)
// from the top of the file, such as "serve", "max_result_rows".
func (p *Problems) Add(path []any, format string, args ...any) {
	p.errs = append(p.errs, p.l.errorf(path, format, args...))
}

// Errors returns what was added, in line order; nil when nothing was.
func (p *Problems) Errors() ConfigErrors {
	if len(p.errs) == 0 {
		return nil
	}
	errs := slices.Clone(p.errs)
	errs.Sort()
	return errs
}

// Err returns Errors as an error, or nil.
func (p *Problems) Err() error {
	if es := p.Errors(); es != nil {
		return es
	}
	return nil
}

// Sort orders errors by line, keeping the order of errors on one line.
func (es ConfigErrors) Sort() {
	sort.SliceStable(es, func(i, j int) bool { return es[i].Line < es[j].Line })
}

// CheckHTTPTimeouts checks a listener's deadlines in section (ingest,
// serve): each must be set, and the headers' deadline is part of the
// request's.
func CheckHTTPTimeouts(p *Problems, section string, t HTTPTimeouts) {
	for _, f := range []struct {
		key string
		d   Duration
	}{{"read_header_timeout", t.ReadHeaderTimeout}, {"read_timeout", t.ReadTimeout}, {"write_timeout", t.WriteTimeout}, {"idle_timeout", t.IdleTimeout}} {
		if f.d <= 0 {
			p.Add([]any{section, f.key}, "%s.%s must be positive (a listener without it lets one slow client hold a connection forever)", section, f.key)
		}
	}
	if t.ReadHeaderTimeout > t.ReadTimeout {
		p.Add([]any{section, "read_header_timeout"}, "%s.read_header_timeout (%s) must not be longer than %s.read_timeout (%s), which includes the headers", section, t.ReadHeaderTimeout.D(), section, t.ReadTimeout.D())
	}
}
