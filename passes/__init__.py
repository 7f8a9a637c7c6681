"""graphopt.passes"""
