"""graphopt.compiler/frontends"""
