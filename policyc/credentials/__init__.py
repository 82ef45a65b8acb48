"""Tokens and certificates made on the spot: signed JWTs and their JWKS, CAs and the client and
listener certificates they issue. For case files, `policyc eval`'s stand-in callers, the
analysis's example requests, the development IdP and the differential proof; never for production.
"""
