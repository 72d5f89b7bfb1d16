"""Moving a candidate policy from shadow to live safely: hashed canary assignment, an always-valid
sequential test on value per dollar, guardrails and the promote / hold / roll-back decision."""
