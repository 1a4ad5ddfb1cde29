module plait.dev/hack/plait-artifacts

go 1.22
