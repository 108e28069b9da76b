package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/internal/testenv"
)

// TestMeasureTypesOnlyInSchemas: outside schemas (and outside tests) no
// code names a measure type (schemas.MeasureCount, …): what an adapter or
// layer needs of a measure it asks its kind (schemas.MeasureKind, one file
// per type, one table), so a new type cannot be missed in a switch
// elsewhere (docs/architecture.md, measure types).
func TestMeasureTypesOnlyInSchemas(t *testing.T) {
	root := testenv.RepoRoot(t)
	fset := token.NewFileSet()
	// The measure types: the constants of type MeasureType in schemas.
	types, err := parser.ParseFile(fset, filepath.Join(root, "schemas", "types.go"), nil, 0)
	require.NoError(t, err)
	consts := map[string]bool{}
	ast.Inspect(types, func(n ast.Node) bool {
		if vs, ok := n.(*ast.ValueSpec); ok {
			if id, ok := vs.Type.(*ast.Ident); ok && id.Name == "MeasureType" {
				for _, name := range vs.Names {
					consts[name.Name] = true
				}
			}
		}
		return true
	})
	require.GreaterOrEqual(t, len(consts), 6, "the MeasureType constants of schemas/types.go")

	var violations []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if rel == "schemas" || strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "node_modules" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok {
				if x, ok := sel.X.(*ast.Ident); ok && x.Name == "schemas" && consts[sel.Sel.Name] {
					violations = append(violations, fset.Position(sel.Pos()).String()+": schemas."+sel.Sel.Name)
				}
			}
			return true
		})
		return nil
	})
	require.NoError(t, err)
	sort.Strings(violations)
	require.Empty(t, violations, "measure types named outside schemas: ask the measure's Kind() (docs/architecture.md, measure types)")
}
