"""Analysis of run records: tables and performance-density / cost-density plots."""
