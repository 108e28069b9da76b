package serving

import "sort"

// QueryParameters lists, sorted, the names ParseQuery accepts on
// GET /v1/views/{view}/query. The OpenAPI test compares it with the
// document, so a parameter added to ParseQuery without documenting it (or
// the reverse) fails a test.
func QueryParameters() []string {
	out := make([]string, 0, len(queryParams))
	for name := range queryParams {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}
