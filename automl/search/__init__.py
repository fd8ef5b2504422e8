"""Searchers (thin adapters over optuna and hyperopt), trial evaluation, and the search loop."""
