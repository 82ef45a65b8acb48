"""Operations: deploying compiled policies to a running Envoy (`deploy`, `watch`) and reading
its access log back (`audit`)."""
