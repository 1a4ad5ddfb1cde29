module plait.dev/hack/pause

go 1.22
