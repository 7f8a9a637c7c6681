"""graphopt.codegen/triton"""
