"""How shapes are searched: `space.py` (sets of shapes), `pareto.py` (dominance, fronts, hypervolume, crowding) and
`strategies/` (ask/tell strategies behind one registry). Nothing here trains or measures."""
