"""The measurements behind the course's claims: ablation, variants, ceiling, bench, memory, report."""
