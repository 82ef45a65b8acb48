"""Development aids: an identity provider and tokens, certificates, a new policy repository, and
the demo of the bundled example."""
