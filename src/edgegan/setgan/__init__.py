"""SETGAN: SinGAN's single-image pyramid with scales trained in parallel, the SSIM early exit, per-scale costs.

Training (:mod:`.train`), the run folder (:mod:`.run`), the report and scale choice (:mod:`.report`,
:mod:`.estimate`), sampling and editing applications (:mod:`.apps`), export (:mod:`.export`) and the CLI.
"""
