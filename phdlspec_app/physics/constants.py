"""Physical constants in CGS units (CODATA 2018), shared by every physics module."""
from __future__ import annotations

k_B = 1.380649e-16          # erg / K
k_B_eV = 8.617333262e-5     # eV / K
h = 6.62607015e-27          # erg s
hbar = h / (2 * 3.141592653589793)
c = 2.99792458e10           # cm / s
c_kms = 2.99792458e5        # km / s
m_e = 9.1093837015e-28      # g
e_charge = 4.80320471e-10   # statcoulomb (esu)
amu = 1.66053906660e-24     # g
m_H = 1.6735575e-24         # g, mass of a hydrogen atom
eV = 1.602176634e-12        # erg
a0 = 5.29177210903e-9       # cm, Bohr radius
RydbergH_eV = 13.598434599702  # eV, ionization energy of H I
sigma_thomson = 6.6524587321e-25  # cm^2
angstrom = 1e-8             # cm
# pi e^2 / (m_e c): the classical line-strength constant, cm^2 s^-1
pi_e2_over_mc = 3.141592653589793 * e_charge**2 / (m_e * c)
