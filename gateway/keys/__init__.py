"""Key material the gateway holds or trusts: audit signing keys, pseudonym master secrets, the identity provider."""
