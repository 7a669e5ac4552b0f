"""The simulated Welma device farm (`station sim`): boards in Linux namespaces with sshd and SoftHSM2.

Used for demos, training and the integration tests; the API is :mod:`station.sim.farm`.
"""
