"""graphopt.compiler/cost"""
