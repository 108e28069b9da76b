// Command hello is a tiny program that testenv's tests build to check
// buildPackage without depending on ./cmd/tandem compiling.
package main

import "fmt"

func main() { fmt.Println("hello from testenv") }
