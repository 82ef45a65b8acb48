"""Development aids: the development identity provider (`policyc dev-idp`), a new policy
repository (`policyc init`) and the demo of the bundled example (`make demo`)."""
