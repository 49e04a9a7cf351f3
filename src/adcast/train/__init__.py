"""Supervised fine-tuning of the advertiser predictor (`adcast train`). Needs the infer extra."""
