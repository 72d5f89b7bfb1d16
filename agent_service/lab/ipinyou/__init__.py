"""GAELP's bidder on the iPinYou replay: RLB's plan × a learned multiplier, trained on synthetic
episodes from the campaign's training statistics, and the runner of every iPinYou policy."""
